"""Tuning: a region's verified symbolic candidates → the checked (and, on a device, fastest) program at
concrete shapes, or XLA when nothing beats it; then the whole rewritten program against ``jax.jit``
(``program.py``); choices and verdicts cached on disk."""

from prism_jax.tune.measure import Timing, time_chained
from prism_jax.tune.program import ProgramCheck, check_program
from prism_jax.tune.tuner import Choice, Emitter, Target, TuneConfig, max_relative_error, random_args, tolerance, tune_region

__all__ = ["Choice", "Emitter", "ProgramCheck", "Target", "Timing", "TuneConfig", "check_program", "max_relative_error",
           "random_args", "time_chained", "tolerance", "tune_region"]
