"""Equivalence verification of sGraphs: verdicts, the fingerprint verifier (random inputs, float64
and a prime field) and the e-graph prover (egglog; this package is its only user)."""

from prism_jax.verify.fingerprint import FingerprintConfig, FingerprintVerifier, modular_exact
from prism_jax.verify.verdict import Counterexample, Status, Verdict, Verifier

__all__ = ["Counterexample", "FingerprintConfig", "FingerprintVerifier", "Status", "Verdict", "Verifier",
           "modular_exact"]
