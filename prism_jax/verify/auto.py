"""The default verification pipeline: the fingerprint first (fast ``not_equal``), the e-graph only for
survivors; ``equal`` only from a proof."""

from __future__ import annotations

import enum

from prism_jax.ir import KernelGraph
from prism_jax.verify.egraph import EGraphConfig, EGraphVerifier
from prism_jax.verify.fingerprint import FingerprintConfig, FingerprintVerifier
from prism_jax.verify.verdict import Status, Verdict


class Method(enum.Enum):
    AUTO = "auto"
    FINGERPRINT = "fingerprint"
    EGRAPH = "egraph"


class AutoVerifier:
    name = "auto"

    def __init__(self, fingerprint: FingerprintConfig = FingerprintConfig(),
                 egraph: EGraphConfig = EGraphConfig()) -> None:
        self.fingerprint = FingerprintVerifier(fingerprint)
        self.egraph = EGraphVerifier(egraph)

    def verify(self, reference: KernelGraph, candidate: KernelGraph) -> Verdict:
        quick = self.fingerprint.verify(reference, candidate)
        if quick.status is Status.NOT_EQUAL:
            return quick
        proof = self.egraph.verify(reference, candidate)
        seconds = quick.seconds + proof.seconds
        method = f"{quick.method}+{proof.method}"
        detail = f"{quick.detail}; {proof.detail}"
        return Verdict(proof.status, method, seconds, detail, proof.counterexample, quick.evidence)


def verifier_for(method: Method | str) -> AutoVerifier | FingerprintVerifier | EGraphVerifier:
    method = Method(method)
    if method is Method.FINGERPRINT:
        return FingerprintVerifier()
    if method is Method.EGRAPH:
        return EGraphVerifier()
    return AutoVerifier()


def verify_graphs(reference: KernelGraph, candidate: KernelGraph, method: Method | str = Method.AUTO) -> Verdict:
    """Is ``candidate`` equivalent to ``reference`` (same inputs and outputs, in order)?"""
    return verifier_for(method).verify(reference, candidate)
