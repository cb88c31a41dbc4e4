"""The hand-built sGraphs are proved equal to their references for symbolic sizes; every plausible wrong
candidate derived from them is refuted by the fingerprint and never proved by the e-graph."""

import pytest

from prism_jax.ir.examples import EXAMPLES
from prism_jax.verify import AbstractTarget, EGraphVerifier, FingerprintVerifier, Status, verify_graphs
from prism_jax.verify.mutate import mutants

PROVED = ["tiled_matmul", "rmsnorm_matmul", "swiglu", "rmsnorm_mlp", "attention", "qknorm_attention"]


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
    count = sum(len(list(mutants(EXAMPLES[name].symbolic()))) for name in PROVED)
    assert count >= 30


@pytest.mark.parametrize("name", PROVED)
def test_wrong_candidates_are_refuted_and_never_proved(name):
    example = EXAMPLES[name]
    reference = example.symbolic_reference()
    for mutant in mutants(example.symbolic()):
        quick = FingerprintVerifier().verify(reference, mutant.graph)
        assert quick.status is Status.NOT_EQUAL, (mutant.description, quick)
        assert quick.counterexample is not None
        proof = EGraphVerifier().verify(reference, mutant.graph)
        assert proof.status is not Status.EQUAL, mutant.description


@pytest.mark.parametrize("name", PROVED)
def test_abstract_target_admits_the_fused_kernel(name):
    example = EXAMPLES[name]
    target = AbstractTarget(example.symbolic_reference())
    assert target.admits(example.symbolic())


def test_abstract_target_rejects_unrelated_computation():
    target = AbstractTarget(EXAMPLES["rmsnorm_matmul"].symbolic_reference())
    assert not target.admits(EXAMPLES["swiglu"].symbolic())
