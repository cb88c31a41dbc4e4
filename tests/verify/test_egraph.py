"""The abstract target's node index answers exactly what egglog's queries answer."""

import pytest

from prism_jax.ir.examples import EXAMPLES
from prism_jax.search.enumerate import EnumerationConfig, EnumerationStats, enumerate_structures
from prism_jax.verify import AbstractTarget
from prism_jax.verify import egraph


def _egglog_judge(target: AbstractTarget, term) -> tuple[bool, int | None]:
    """The answer of egglog's own queries: is ``sub(term)`` in the saturated e-graph, which output's
    class is it in."""
    if not target._egraph.check_bool(egraph.sub(term)):
        return False, None
    return True, next((k for k, out in enumerate(target._outputs)
                       if target._egraph.check_bool(egraph.eq(term).to(out))), None)


@pytest.mark.parametrize("name", ["rmsnorm_matmul", "attention", "qknorm_attention"])
def test_node_index_agrees_with_egglog_on_every_enumerated_term(name, monkeypatch):
    judged = []
    indexed_judge = AbstractTarget.judge

    def judge(self, term):
        assert self._index is not None, "the saturated target did not read back as a node index"
        answer = indexed_judge(self, term)
        judged.append((answer[:2], _egglog_judge(self, term)))
        return answer

    monkeypatch.setattr(AbstractTarget, "judge", judge)
    reference = EXAMPLES[name].symbolic_reference()
    for _ in zip(range(5), enumerate_structures(reference, EnumerationConfig(time_limit_s=3.0), EnumerationStats())):
        pass
    mismatches = [(ours, theirs) for ours, theirs in judged if ours != theirs]
    assert not mismatches, mismatches[:3]
    assert sum(ours[0] for ours, _ in judged) > 3 and sum(not ours[0] for ours, _ in judged) > 30


def test_class_keys_are_shared_within_an_e_class_only():
    example = EXAMPLES["rmsnorm_matmul"]
    target = AbstractTarget(example.symbolic_reference())
    encoder = egraph.Encoder(abstract=True)
    (out,) = encoder.encode(example.symbolic(), "p")  # the fused kernel: the same class as the target
    admitted, output, key = target.judge(out)
    assert admitted and output == 0 and key == target.judge(target._outputs[0])[2]
    inner = [t for t in encoder.values.values() if target.judge(t)[0] and target.judge(t)[2] != key]
    assert inner  # its intermediate values are admitted subterms of other classes


def test_without_the_index_egglog_answers_the_same(monkeypatch):
    reference = EXAMPLES["attention"].symbolic_reference()
    indexed = AbstractTarget(reference)
    monkeypatch.setattr(egraph._NodeIndex, "of", classmethod(lambda cls, eg, outputs: None))
    plain = AbstractTarget(reference)
    assert plain._index is None
    encoder = egraph.Encoder(abstract=True)
    encoder.encode(EXAMPLES["attention"].symbolic(), "p")
    terms = list(encoder.values.values())
    assert [indexed.judge(t)[:2] for t in terms] == [plain.judge(t)[:2] for t in terms]
    assert any(indexed.judge(t)[0] for t in terms)
