"""Tuning: a region's verified symbolic candidates → the checked (and, on a device, fastest) program at
concrete shapes, or XLA when nothing beats it; choices cached on disk."""

from prism_jax.tune.measure import Timing, time_chained
from prism_jax.tune.tuner import Choice, Emitter, Target, TuneConfig, max_relative_error, random_args, tolerance, tune_region

__all__ = ["Choice", "Emitter", "Target", "Timing", "TuneConfig", "max_relative_error", "random_args", "time_chained",
           "tolerance", "tune_region"]
