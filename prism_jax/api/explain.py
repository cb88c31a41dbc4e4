"""``Superoptimized.explain``: what runs for each region and why — readable in a terminal (``str``) and
rendered as HTML in a notebook (``_repr_html_``)."""

from __future__ import annotations

import dataclasses
import html
from typing import TYPE_CHECKING

from prism_jax.ir import format_kernel_graph

if TYPE_CHECKING:
    from prism_jax.api.superoptimize import Plan, RegionPlan


def _us(seconds: float | None, label: str = "") -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f} µs{label}"


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The report of one call signature's plan."""

    name: str
    plan: "Plan"

    def rows(self) -> list[tuple[str, ...]]:
        rows = [("region", "runs", "kernels", "proof", "tiles", "kernel time", "XLA time", "search+tune", "cache")]
        for p in self.plan.regions:
            row = _row(p)
            if p.uses_kernel and not self.plan.runs_kernels:  # found and tuned, but the program runs jax.jit's
                row = (row[0], "XLA (program)") + row[2:]
            rows.append(row)
        return rows

    def program_line(self) -> str:
        """The whole-program check's verdict ('' where none ran: interpret mode, no kernels, or a
        program that is a single region)."""
        check = self.plan.program_check
        if check is None:
            return ""
        cached = " (cached)" if check.cache_hit else ""
        if check.keeps_kernels:
            return (f"whole program{cached}: {_us(check.kernels_s)} with its kernels vs jax.jit's {_us(check.xla_s)} "
                    "per call: the kernels run")
        return f"whole program{cached}: {check.reason}"

    def table(self) -> str:
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)

    def __str__(self) -> str:
        head = f"superoptimize({self.name}), backend={self.plan.backend.value}"
        if self.plan.note:
            return f"{head}\n{self.plan.note}"
        parts = [head, self.table()]
        if self.program_line():
            parts.append(self.program_line())
        for p in self.plan.regions:
            parts.append(f"\n== {p.region.name}: " + ("kernel" if p.uses_kernel else f"XLA — {p.note}"))
            if p.uses_kernel:
                choice = p.choice
                parts.append(format_kernel_graph(choice.graph))
                parts.append(f"# {p.search.candidates[choice.candidate].verdict}")
                parts.append(f"# sizes {_sizes(choice.sizes)}; {choice.options}; max error vs reference "
                             f"{choice.max_error:.1e}")
            elif p.search is not None and p.search.candidates:  # what was found, though XLA runs
                best = p.search.candidates[0]
                parts.append("best proved candidate (symbolic; not used):")
                parts.append(format_kernel_graph(best.graph))
                parts.append(f"# {best.verdict}")
        parts.append("\ntimes marked 'est.' are the cost model's estimates for the ranking device, not measurements")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        head = f"<b>superoptimize({html.escape(self.name)})</b>, backend={self.plan.backend.value}"
        if self.plan.note:
            return f"<div>{head}<br>{html.escape(self.plan.note)}</div>"
        rows = self.rows()
        header = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        details = [f"<div>{html.escape(self.program_line())}</div>"] if self.program_line() else []
        for p in self.plan.regions:
            if p.uses_kernel:
                details.append(f"<details><summary>{html.escape(p.region.name)}: chosen sGraph</summary><pre>"
                               f"{html.escape(format_kernel_graph(p.choice.graph))}</pre></details>")
            else:
                details.append(f"<div>{html.escape(p.region.name)}: XLA — {html.escape(p.note)}</div>")
        return f"<div>{head}<table><tr>{header}</tr>{body}</table>{''.join(details)}</div>"

    __repr__ = __str__


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(sizes.items())) or "-"


def _row(p: "RegionPlan") -> tuple[str, ...]:
    choice = p.choice
    hit = "hit" if p.search is not None and p.search.cache_hit and choice is not None and choice.cache_hit else "miss"
    if not p.uses_kernel:
        xla = _us(choice.xla_measured_s) if choice and choice.xla_measured_s else _us(
            choice.xla_estimate_s if choice else None, " est.")
        return (p.region.name, "XLA", "-", "-", "-", "-", xla, f"{p.seconds:.2f} s", hit)
    verdict = p.search.candidates[choice.candidate].verdict
    grid = {k: v for k, v in choice.sizes.items() if k not in p.search.sizes}  # the tiling, not the shapes
    kernel = _us(choice.measured_s) if choice.measured_s is not None else _us(choice.estimate_s, " est.")
    xla = _us(choice.xla_measured_s) if choice.xla_measured_s is not None else _us(choice.xla_estimate_s, " est.")
    kernels = sum(1 for op in choice.graph.custom_kernels)
    return (p.region.name, "kernel", str(kernels), verdict.method, _sizes(grid), kernel, xla, f"{p.seconds:.2f} s", hit)
