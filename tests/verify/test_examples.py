"""The hand-built sGraphs are proved equal to their references for symbolic sizes; every plausible wrong
candidate derived from them is refuted by the fingerprint and never proved by the e-graph."""

import pytest

from prism_jax.ir.examples import EXAMPLES
from prism_jax.verify import AbstractTarget, EGraphVerifier, FingerprintVerifier, Status, verify_graphs
from prism_jax.verify.mutate import mutants

PROVED = ["tiled_matmul", "rmsnorm_matmul", "swiglu", "rmsnorm_mlp", "attention", "qknorm_attention",
          "split_kv_decode_attention"]

# mutants that are no wrong candidates: the combine kernel's weights w_c = exp(m_c - M) appear in its numerator
# and denominator, so a factor common to every chunk cancels (exp(m_c + M) = exp(m_c - M)·exp(2M), exp(m_c) =
# exp(m_c - M)·exp(M)); the fingerprint cannot refute them and a proof of them would be right
EQUIVALENT_MUTANTS = {
    "split_kv_decode_attention": {"kernel #1: op #1 sub: sub → add",
                                  "kernel #1: op #1 sub: dropped (its input %2 forwarded)"},
}

# Mirage-style abstract pruning compares a partial program's values with subexpressions of the unfused target;
# a second kernel that reduces the first one's per-chunk partial results (max and rescaled sums over the chunk
# dim) computes values the target never does, so split-KV decoding is outside what it admits
ABSTRACT_ADMITS = [name for name in PROVED if name != "split_kv_decode_attention"]


@pytest.mark.parametrize("name", PROVED)
def test_symbolic_example_is_proved_equal(name):
    example = EXAMPLES[name]
    verdict = verify_graphs(example.symbolic_reference(), example.symbolic())
    assert verdict.status is Status.EQUAL, verdict
    assert verdict.evidence >= 3  # the fingerprint ran first


@pytest.mark.parametrize("name", PROVED)
def test_every_concrete_tiling_is_proved_equal(name):
    example = EXAMPLES[name]
    for tiling in example.tilings:
        verdict = EGraphVerifier().verify(example.reference_graph(), example.concrete(tiling))
        assert verdict.status is Status.EQUAL, (tiling, verdict)


def test_there_are_at_least_thirty_wrong_candidates():
    count = sum(len([m for m in mutants(EXAMPLES[name].symbolic())
                     if m.description not in EQUIVALENT_MUTANTS.get(name, ())]) for name in PROVED)
    assert count >= 30


@pytest.mark.parametrize("name", PROVED)
def test_wrong_candidates_are_refuted_and_never_proved(name):
    example = EXAMPLES[name]
    reference = example.symbolic_reference()
    equivalent = EQUIVALENT_MUTANTS.get(name, set())
    seen = set()
    for mutant in mutants(example.symbolic()):
        if mutant.description in equivalent:
            seen.add(mutant.description)
            quick = FingerprintVerifier().verify(reference, mutant.graph)
            assert quick.status is Status.UNKNOWN, (mutant.description, quick)
            assert EGraphVerifier().verify(reference, mutant.graph).status is not Status.NOT_EQUAL
            continue
        quick = FingerprintVerifier().verify(reference, mutant.graph)
        assert quick.status is Status.NOT_EQUAL, (mutant.description, quick)
        assert quick.counterexample is not None
        proof = EGraphVerifier().verify(reference, mutant.graph)
        assert proof.status is not Status.EQUAL, mutant.description
    assert seen == equivalent, f"stale EQUIVALENT_MUTANTS entries: {sorted(equivalent - seen)}"


@pytest.mark.parametrize("name", ABSTRACT_ADMITS)
def test_abstract_target_admits_the_fused_kernel(name):
    example = EXAMPLES[name]
    target = AbstractTarget(example.symbolic_reference())
    assert target.admits(example.symbolic())


def test_abstract_target_rejects_unrelated_computation():
    target = AbstractTarget(EXAMPLES["rmsnorm_matmul"].symbolic_reference())
    assert not target.admits(EXAMPLES["swiglu"].symbolic())
