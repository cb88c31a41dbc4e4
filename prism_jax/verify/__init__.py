"""Equivalence verification of sGraphs: verdicts, the fingerprint verifier (random inputs, float64
and a prime field), the e-graph prover and abstract-expression pruning (egglog; this package is its
only user), and the automatic pipeline that chains them."""

from prism_jax.verify.auto import AutoVerifier, Method, verifier_for, verify_graphs
from prism_jax.verify.egraph import AbstractTarget, EGraphConfig, EGraphVerifier
from prism_jax.verify.fingerprint import FingerprintConfig, FingerprintVerifier, modular_exact
from prism_jax.verify.verdict import Counterexample, Status, Verdict, Verifier

__all__ = ["AbstractTarget", "AutoVerifier", "Counterexample", "EGraphConfig", "EGraphVerifier",
           "FingerprintConfig", "FingerprintVerifier", "Method", "Status", "Verdict", "Verifier",
           "modular_exact", "verifier_for", "verify_graphs"]
