"""The enumeration's worker processes (:mod:`prism_jax.search.worker`), kept between searches.

Starting a worker costs a few seconds of imports, more than a small region's whole search: a block
of an LLM searches dozens of regions and parts, each once per start of a worker before this pool.
A worker that finished a request waits here for the next; one idle for longer than
``REUSE_WITHIN_S`` is closed instead of reused (the worker itself exits a while after that, so
the two never race), and every worker ends with this process (its stdin closes)."""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import pickle
import subprocess
import tempfile
import threading
import time
from typing import Iterator, Sequence

from prism_jax.search.worker import IDLE_EXIT_S, command, read_frame, write_frame

REUSE_WITHIN_S = IDLE_EXIT_S / 2


class WorkerError(RuntimeError):
    """A worker process ended without answering (its stderr in the message)."""


class Worker:
    """One worker process: :meth:`run` sends a request and waits for its answer."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self.idle_since = time.monotonic()
        self.error_text = ""  # the end of its stderr, once closed

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, payload: bytes) -> list:
        answer = None
        try:
            write_frame(self.process.stdin, payload)
            answer = read_frame(self.process.stdout)
        except OSError:  # a broken pipe: the process is gone
            pass
        if answer is None:
            self.close()
            raise WorkerError(f"search worker failed:\n{self.error_text}")
        self.idle_since = time.monotonic()
        return pickle.loads(answer)

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self._stderr.closed:
            self._stderr.seek(0)
            self.error_text = self._stderr.read().decode(errors="replace")[-8000:]
            self._stderr.close()


class WorkerPool:
    """Worker processes shared by every search of this process (thread-safe: a worker serves one
    request at a time; more at once start more workers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._pid = os.getpid()
        self.started = 0  # workers started over the pool's life

    def run(self, payloads: Sequence[bytes]) -> Iterator[tuple[int, list]]:
        """``(index, answer)`` of each payload as its worker answers, one worker per payload. Closing
        the iterator early waits for the requests in flight (their workers are kept)."""
        with concurrent.futures.ThreadPoolExecutor(max(1, len(payloads))) as threads:
            futures = {threads.submit(self._run_one, payload): k for k, payload in enumerate(payloads)}
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()

    def close(self) -> None:
        """Close the idle workers (busy ones are closed when they return)."""
        with self._lock:
            idle, self._idle = self._own_idle(), []
        for worker in idle:
            worker.close()

    def _own_idle(self) -> list[Worker]:
        """The idle workers, unless this is a fork of the process that started them: their pipes are the
        parent's too, so a request from here would cross its own; the fork starts its own workers."""
        if os.getpid() != self._pid:
            self._idle, self._pid = [], os.getpid()
        return self._idle

    def _run_one(self, payload: bytes) -> list:
        worker = self._acquire()
        answer = worker.run(payload)  # a failed worker is closed and not returned
        with self._lock:
            self._idle.append(worker)
        return answer

    def _acquire(self) -> Worker:
        stale = []
        with self._lock:
            idle = self._own_idle()
            while idle:
                worker = idle.pop()
                if worker.alive and time.monotonic() - worker.idle_since < REUSE_WITHIN_S:
                    break
                stale.append(worker)
            else:
                worker = None
            if worker is None:
                self.started += 1
        for old in stale:
            old.close()
        return worker if worker is not None else Worker()


_POOL = WorkerPool()
atexit.register(_POOL.close)


def shared_pool() -> WorkerPool:
    return _POOL
