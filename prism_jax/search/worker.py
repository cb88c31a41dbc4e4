"""A worker process of the parallel enumeration (started by :func:`command`) reads framed
requests on stdin (an 8-byte little-endian length, then a pickled list of tasks), runs each request's
tasks in order and answers each with one frame (the pickled list of results). It serves requests until
stdin closes or none comes for ``IDLE_EXIT_S``: starting one costs over a second (importing egglog and
sympy), so :mod:`prism_jax.search.pool` keeps it for the next search.

Workers are plain subprocesses rather than ``multiprocessing`` children, so a user's script needs no
``if __name__ == "__main__"`` guard (``spawn`` would re-run it) and a parent running JAX's threads is
never forked."""

from __future__ import annotations

import itertools
import os
import pickle
import select
import sys
from typing import BinaryIO

from prism_jax.search.enumerate import EnumerationConfig, EnumerationStats, enumerate_structures

# Loads prism_jax's subpackages from the parent's installation without running the package's __init__,
# which imports jax, the frontend and the API: ~1.3 s of a worker's ~2.8 s start the enumeration never uses.
_BOOTSTRAP = """\
import sys, types
package = types.ModuleType("prism_jax")
package.__path__ = [{package_dir!r}]
sys.modules["prism_jax"] = package
from prism_jax.search.worker import main
main()
"""
IDLE_EXIT_S = 600.0  # a worker nobody sent work for this long exits (the pool stops reusing it sooner)
HEADER_BYTES = 8


def command() -> list[str]:
    """The command line that starts a worker: this Python, the bootstrap above, then :func:`main`."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable, "-c", _BOOTSTRAP.format(package_dir=package_dir)]


def enumerate_start_point(core, config: EnumerationConfig, index: int, limit: int):
    stats = EnumerationStats()
    found = list(itertools.islice(enumerate_structures(core, config, stats, only=index), limit))
    return found, stats


def write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(len(data).to_bytes(HEADER_BYTES, "little") + data)
    stream.flush()


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's data; None at the end of the stream (or in the middle of a frame)."""
    header = _read_exactly(stream, HEADER_BYTES)
    return None if header is None else _read_exactly(stream, int.from_bytes(header, "little"))


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _request_within(stream: BinaryIO, seconds: float) -> bool:
    try:
        return bool(select.select([stream], [], [], seconds)[0])
    except (OSError, ValueError):  # no select on this kind of stream: wait in the read
        return True


def main() -> None:
    requests = sys.stdin.buffer.raw  # unbuffered: select sees every byte not yet read
    # the answers get stdout's pipe to themselves: anything else printed goes to stderr
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while _request_within(requests, IDLE_EXIT_S):
        data = read_frame(requests)
        if data is None:
            return
        write_frame(answers, pickle.dumps([enumerate_start_point(*task) for task in pickle.loads(data)]))


if __name__ == "__main__":
    main()
