"""A small sqlite-backed key-value store for results that must outlive a process.

Values are JSON (dicts with string keys, lists, strings, ints, floats, bools, None), grouped by namespace
(``"search"``, ``"tune"``, ...).  Every entry records when it was written and the prism_jax version that
wrote it; an entry from another version reads as absent.

The cache is best effort: nothing here raises to the caller except for a programming error (a value
that is not JSON, a key that is not a string).  A corrupt file is moved aside and rebuilt; a location
that cannot be written turns the cache into a no-op after one warning; a lock held past the busy
timeout makes that one operation a miss.  Warnings go to the ``prism_jax.cache`` logger.

Concurrency: the database runs in WAL mode with a 30 s busy timeout, and every operation opens its own
connection and runs one short transaction, so threads and processes can share a cache file.  Writes of
one key from several writers: the last one wins.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["CACHE_DIR_ENV", "CACHE_ENV", "SCHEMA_VERSION", "CacheStats", "JSONValue", "NullCache", "ResultCache",
           "cache_dir", "cache_enabled", "open_cache"]

CACHE_DIR_ENV = "PRISM_JAX_CACHE_DIR"
"""Environment variable naming the cache directory (overrides the XDG location)."""
CACHE_ENV = "PRISM_JAX_CACHE"
"""Environment variable that turns the cache off when set to ``0``, ``off``, ``false`` or ``no``."""
SCHEMA_VERSION = 1
"""Layout of the tables; a file with another layout is emptied and recreated on open."""
DEFAULT_FILENAME = "results.sqlite"
BUSY_TIMEOUT_S = 30.0

JSONValue = dict | list | str | int | float | bool | None
"""What the cache stores: JSON values (dict keys are strings; tuples are not accepted)."""

_log = logging.getLogger("prism_jax.cache")
_OFF_VALUES = {"0", "off", "false", "no"}
# primary result codes (the low byte of sqlite's extended codes)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26
_MISSING = object()
_T = TypeVar("_T")


def cache_dir(*, create: bool = True) -> pathlib.Path:
    """The directory of prism_jax's on-disk caches.

    ``$PRISM_JAX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/prism_jax``, else ``~/.cache/prism_jax``.
    With ``create`` (the default) the directory is created if missing; that raises :class:`OSError` when
    it cannot be (:class:`ResultCache` does not: it creates its directory itself and degrades instead).
    """
    explicit = os.environ.get(CACHE_DIR_ENV, "")
    if explicit:
        path = pathlib.Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # the XDG spec ignores relative paths
        base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
        path = base / "prism_jax"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_enabled() -> bool:
    """False when ``$PRISM_JAX_CACHE`` is ``0``, ``off``, ``false`` or ``no`` (any case); True otherwise."""
    return os.environ.get(CACHE_ENV, "").strip().lower() not in _OFF_VALUES


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache: its file (None for :class:`NullCache`), the entries visible to ``get``
    (this version's), and the bytes the file and its write-ahead log take on disk."""

    path: pathlib.Path | None
    entries: int
    size_bytes: int


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"cache {what} must be a str, got {type(name).__name__}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"cache {what} {name!r} is not valid unicode (lone surrogate)") from None
    return name


class _NotJSON(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
        self.path: list[str] = []  # innermost first, filled on the way out


def _encode(namespace: str, key: str, value: object) -> str:
    """JSON text of ``value``; TypeError (naming the entry) unless it round-trips exactly."""
    active: set[int] = set()  # containers on the current path, for cycles

    def walk(v: object) -> None:
        kind = type(v)
        if v is None or kind is str or kind is int or kind is float or kind is bool:
            return
        if kind is not list and kind is not dict:
            raise _NotJSON(f"{kind.__name__} (use dict/list/str/int/float/bool/None)")
        if id(v) in active:
            raise _NotJSON("circular reference")
        active.add(id(v))
        if kind is list:
            for i, item in enumerate(v):  # type: ignore[arg-type]
                try:
                    walk(item)
                except _NotJSON as exc:
                    exc.path.append(f"[{i}]")
                    raise
        else:
            for k, item in v.items():  # type: ignore[union-attr]
                if type(k) is not str:
                    raise _NotJSON(f"dict key {k!r} is a {type(k).__name__}, not a str")
                try:
                    walk(item)
                except _NotJSON as exc:
                    exc.path.append(f"[{k!r}]")
                    raise
        active.discard(id(v))

    try:
        walk(value)
    except _NotJSON as exc:
        where = "value" + "".join(reversed(exc.path))
        raise TypeError(f"cache value for {namespace!r}/{key!r} is not JSON-serializable: {exc.why} at {where}") \
            from None
    # ASCII escapes keep lone surrogates (valid in a str, not in UTF-8) round-tripping
    return json.dumps(value, separators=(",", ":"))


def _decode(text: str) -> JSONValue:
    return json.loads(text)


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, _CorruptError):
        return True
    if _code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    message = str(exc).lower()
    return "file is not a database" in message or "malformed" in message


def _is_busy(exc: BaseException) -> bool:
    return _code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in str(exc).lower()


class _CorruptError(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


class NullCache:
    """A cache that stores nothing: the same interface as :class:`ResultCache`, every lookup a miss.

    Used when ``$PRISM_JAX_CACHE`` turns caching off.  ``put`` still rejects values that are not JSON, so
    a bad value fails the same way whether or not the cache is on.
    """

    enabled = False
    path: pathlib.Path | None = None
    version = ""

    def get(self, namespace: str, key: str, default: JSONValue = None) -> JSONValue:
        """Always ``default`` (None unless given)."""
        _check_name("namespace", namespace)
        _check_name("key", key)
        return default

    def put(self, namespace: str, key: str, value: JSONValue) -> None:
        """Check that ``value`` is JSON (TypeError otherwise) and drop it."""
        _encode(_check_name("namespace", namespace), _check_name("key", key), value)

    def delete(self, namespace: str, key: str) -> None:
        """Nothing to delete."""

    def clear(self, namespace: str | None = None) -> None:
        """Nothing to clear."""

    def prune(self) -> int:
        """Nothing to prune; returns 0."""
        return 0

    def keys(self, namespace: str) -> list[str]:
        """Always empty."""
        return []

    def __len__(self) -> int:
        return 0

    def stats(self) -> CacheStats:
        """``CacheStats(path=None, entries=0, size_bytes=0)``."""
        return CacheStats(path=None, entries=0, size_bytes=0)

    def __repr__(self) -> str:
        return "NullCache()"


class ResultCache:
    """A persistent key-value store of JSON values in one sqlite file, shared by threads and processes.

    ``path`` defaults to ``cache_dir() / "results.sqlite"``; ``version`` (normally ``prism_jax.__version__``,
    passed in by the caller) is stored with every entry, and entries written under another version read
    as absent.  The file is opened lazily, on the first operation.  See the module docstring for what
    happens on corruption, unwritable locations and lock contention: none of it raises.
    """

    enabled: bool

    def __init__(self, path: pathlib.Path | str | None = None, version: str = "") -> None:
        if not isinstance(version, str):
            raise TypeError(f"cache version must be a str, got {type(version).__name__}")
        self.path = pathlib.Path(path) if path is not None else cache_dir(create=False) / DEFAULT_FILENAME
        self.version = version
        self.enabled = True  # False once the location proved unusable (after one warning)
        self._ready = False
        self._generation = 0  # bumped on every successful open, so a stale failure cannot discard a new file
        self._lock = threading.Lock()

    @classmethod
    def disabled(cls) -> NullCache:
        """A cache that stores nothing (a :class:`NullCache`)."""
        return NullCache()

    def __repr__(self) -> str:
        state = "" if self.enabled else ", disabled"
        return f"ResultCache({str(self.path)!r}, version={self.version!r}{state})"

    # -- public operations ------------------------------------------------------------------------------

    def get(self, namespace: str, key: str, default: JSONValue = None) -> JSONValue:
        """The value stored under ``(namespace, key)`` by this version, else ``default`` (None)."""
        _check_name("namespace", namespace)
        _check_name("key", key)

        def op(conn: sqlite3.Connection) -> object:
            row = conn.execute("SELECT value FROM entries WHERE namespace = ? AND key = ? AND version = ?",
                               (namespace, key, self.version)).fetchone()
            return _MISSING if row is None else row[0]

        text = self._run("get", op, _MISSING)
        if text is _MISSING:
            return default
        try:
            return _decode(text)  # type: ignore[arg-type]
        except ValueError:
            _log.warning("prism_jax cache %s: unreadable value for %r/%r; treating it as absent",
                         self.path, namespace, key)
            return default

    def put(self, namespace: str, key: str, value: JSONValue) -> None:
        """Store ``value`` under ``(namespace, key)``, replacing any previous value (last writer wins).

        Raises TypeError, naming the entry, when ``value`` is not JSON (tuples, sets, non-str dict keys
        and other types are refused because they would not come back as they went in).
        """
        text = _encode(_check_name("namespace", namespace), _check_name("key", key), value)
        row = (namespace, key, text, self.version, time.time())
        self._run("put", lambda conn: conn.execute(
            "INSERT OR REPLACE INTO entries (namespace, key, value, version, created) VALUES (?, ?, ?, ?, ?)", row),
            None)

    def delete(self, namespace: str, key: str) -> None:
        """Remove ``(namespace, key)`` (whatever version wrote it); absent keys are fine."""
        args = (_check_name("namespace", namespace), _check_name("key", key))
        self._run("delete", lambda conn: conn.execute("DELETE FROM entries WHERE namespace = ? AND key = ?", args),
                  None)

    def clear(self, namespace: str | None = None) -> None:
        """Remove every entry of ``namespace``, or of all namespaces when it is None."""
        if namespace is None:
            self._run("clear", lambda conn: conn.execute("DELETE FROM entries"), None)
        else:
            args = (_check_name("namespace", namespace),)
            self._run("clear", lambda conn: conn.execute("DELETE FROM entries WHERE namespace = ?", args), None)

    def prune(self) -> int:
        """Remove the entries written by other versions; returns how many went."""
        return self._run("prune", lambda conn: conn.execute("DELETE FROM entries WHERE version != ?",
                                                            (self.version,)).rowcount, 0)

    def keys(self, namespace: str) -> list[str]:
        """The keys of ``namespace`` that ``get`` would find, sorted."""
        args = (_check_name("namespace", namespace), self.version)
        rows = self._run("keys", lambda conn: conn.execute(
            "SELECT key FROM entries WHERE namespace = ? AND version = ? ORDER BY key", args).fetchall(), [])
        return [row[0] for row in rows]

    def __len__(self) -> int:
        """The number of entries ``get`` would find, over all namespaces."""
        return self._run("len", lambda conn: conn.execute("SELECT COUNT(*) FROM entries WHERE version = ?",
                                                          (self.version,)).fetchone()[0], 0)

    def stats(self) -> CacheStats:
        """Path, visible entries and on-disk size (database file plus its write-ahead log)."""
        entries = len(self)
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.path.getsize(f"{self.path}{suffix}")
            except OSError:
                pass
        return CacheStats(path=self.path, entries=entries, size_bytes=size)

    # -- machinery ----------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # autocommit mode: each statement is its own transaction unless BEGIN is issued explicitly
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL, and cheaper
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, what: str, op: Callable[[sqlite3.Connection], _T], fallback: _T) -> _T:
        """``op`` on a fresh connection; on corruption rebuild and retry once; on any other failure warn
        and return ``fallback`` (disabling the cache when the failure is not a passing lock)."""
        for attempt in range(2):
            if not self._ensure_open():
                return fallback
            generation = self._generation
            try:
                conn = self._connect()
                try:
                    return op(conn)
                finally:
                    conn.close()
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc) and attempt == 0:
                    with self._lock:
                        if self._ready and self._generation == generation:  # not rebuilt by another thread
                            self._ready = False
                            self._discard_corrupt(exc)
                    continue
                if _is_busy(exc):
                    _log.warning("prism_jax cache %s: %s timed out waiting for a lock (%s); skipped",
                                 self.path, what, exc)
                    return fallback
                self._disable(f"{what} failed: {exc}")
                return fallback
            except (sqlite3.Error, OSError) as exc:
                self._disable(f"{what} failed: {exc}")
                return fallback
        return fallback

    def _ensure_open(self) -> bool:
        """Create or check the file and its tables once per instance; False when the cache is disabled."""
        if self._ready:
            return True
        with self._lock:
            if self._ready or not self.enabled:
                return self._ready
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._disable(f"cannot create {self.path.parent}: {exc}")
                return False
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            discarded = False
            while True:
                try:
                    self._setup()
                except sqlite3.DatabaseError as exc:
                    if _is_corrupt(exc) and not discarded:
                        discarded = True
                        if self._discard_corrupt(exc):
                            continue
                        return False
                    if _is_busy(exc) and time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    self._disable(f"cannot open: {exc}")
                    return False
                except (sqlite3.Error, OSError) as exc:
                    self._disable(f"cannot open: {exc}")
                    return False
                self._generation += 1
                self._ready = True
                return True

    def _setup(self) -> None:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                _log.info("prism_jax cache %s: journal mode is %s, not wal", self.path, mode)
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise _CorruptError("; ".join(map(str, problems[:3])))
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                stored = None if row is None else row[0]
                if stored != SCHEMA_VERSION:
                    if stored is not None:
                        _log.info("prism_jax cache %s: schema version %s, expected %s; emptying the cache",
                                  self.path, stored, SCHEMA_VERSION)
                    conn.execute("DROP TABLE IF EXISTS entries")
                    conn.execute("DELETE FROM schema_version")
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                conn.execute("CREATE TABLE IF NOT EXISTS entries (namespace TEXT NOT NULL, key TEXT NOT NULL, "
                             "value TEXT NOT NULL, version TEXT NOT NULL, created REAL NOT NULL, "
                             "PRIMARY KEY (namespace, key)) WITHOUT ROWID")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _discard_corrupt(self, exc: BaseException) -> bool:
        """Move the damaged file aside (to ``<name>.corrupt``), drop its WAL and shared-memory files, and
        warn.  False (and the cache disabled) when the file cannot be moved or removed."""
        aside = self.path.with_name(self.path.name + ".corrupt")
        _log.warning("prism_jax cache %s is corrupt (%s); moving it to %s and starting an empty cache",
                     self.path, exc, aside.name)
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            pass
        except OSError:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as unlink_exc:
                self._disable(f"cannot remove the corrupt file: {unlink_exc}")
                return False
        for suffix in ("-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except OSError:
                pass
        return True

    def _disable(self, reason: str) -> None:
        if self.enabled:
            self.enabled = False
            self._ready = False
            _log.warning("prism_jax cache %s is unusable (%s); caching is off for this cache", self.path, reason)


def open_cache(path: pathlib.Path | str | None = None, version: str = "") -> ResultCache | NullCache:
    """A :class:`ResultCache` at ``path`` (default ``cache_dir() / "results.sqlite"``), or a
    :class:`NullCache` when :func:`cache_enabled` is False."""
    if not cache_enabled():
        return NullCache()
    return ResultCache(path, version=version)

