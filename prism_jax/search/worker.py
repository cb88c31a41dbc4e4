"""A worker process of the parallel enumeration: ``python -m prism_jax.search.worker`` reads one
pickled task on stdin and writes the pickled result on stdout.

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
    core, config, index, limit = pickle.load(sys.stdin.buffer)
    result = enumerate_start_point(core, config, index, limit)
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
