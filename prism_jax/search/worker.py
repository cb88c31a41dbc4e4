"""A worker process of the parallel enumeration: ``python -m prism_jax.search.worker`` reads a pickled
list of tasks on stdin, runs them in order and writes the pickled list of results on stdout (one
process per worker, not per task: starting one costs a second or two).

Workers are plain subprocesses rather than ``multiprocessing`` children, so a user's script needs no
``if __name__ == "__main__"`` guard (``spawn`` would re-run it) and a parent running JAX's threads is
never forked."""

from __future__ import annotations

import itertools
import pickle
import sys

from prism_jax.search.enumerate import EnumerationConfig, EnumerationStats, enumerate_structures


def enumerate_start_point(core, config: EnumerationConfig, index: int, limit: int):
    stats = EnumerationStats()
    found = list(itertools.islice(enumerate_structures(core, config, stats, only=index), limit))
    return found, stats


def main() -> None:
    tasks = pickle.load(sys.stdin.buffer)
    results = [enumerate_start_point(*task) for task in tasks]
    sys.stdout.buffer.write(pickle.dumps(results))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
