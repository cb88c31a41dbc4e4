"""prism_jax.cache: the sqlite result cache (round trips, versions, corruption, unwritable places, concurrency)."""

import logging
import math
import multiprocessing
import os
import pathlib
import sqlite3
import subprocess
import sys
import threading

import pytest

from prism_jax.cache import (
    CACHE_DIR_ENV,
    CACHE_ENV,
    SCHEMA_VERSION,
    CacheStats,
    NullCache,
    ResultCache,
    cache_dir,
    cache_enabled,
    open_cache,
)

LOGGER = "prism_jax.cache"
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "prism_jax"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Never touch the real ~/.cache: every cache location points into tmp_path unless a test says otherwise."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "default-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CACHE_ENV, raising=False)


@pytest.fixture
def cache(tmp_path):
    return ResultCache(tmp_path / "c" / "results.sqlite", version="1.0")


def _warnings(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# -- location and switches ------------------------------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "default-cache"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache_dir() == tmp_path / "xdg" / "prism_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "prism_jax"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec ignores relative paths
    assert cache_dir() == tmp_path / "home" / ".cache" / "prism_jax"


def test_cache_dir_created_on_demand(tmp_path):
    target = tmp_path / "default-cache"
    assert cache_dir(create=False) == target and not target.exists()
    assert cache_dir() == target and target.is_dir()


def test_default_path_is_in_cache_dir(tmp_path):
    c = ResultCache()
    assert c.path == tmp_path / "default-cache" / "results.sqlite"
    assert not c.path.parent.exists()  # nothing is created before the first operation
    c.put("ns", "k", 1)
    assert c.path.is_file() and c.get("ns", "k") == 1


@pytest.mark.parametrize("value,enabled", [(None, True), ("1", True), ("on", True), ("", True), ("0", False),
                                           ("off", False), ("OFF", False), ("False", False), ("no", False),
                                           (" No ", False)])
def test_cache_enabled(monkeypatch, value, enabled):
    if value is not None:
        monkeypatch.setenv(CACHE_ENV, value)
    assert cache_enabled() is enabled


def test_open_cache_chooses(monkeypatch, tmp_path):
    path = tmp_path / "x.sqlite"
    opened = open_cache(path, version="v")
    assert isinstance(opened, ResultCache) and opened.path == path and opened.version == "v"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert isinstance(open_cache(path), NullCache)
    assert isinstance(ResultCache.disabled(), NullCache)


# -- the store ------------------------------------------------------------------------------------------------

NESTED = {
    "floats": [0.1, 1 / 3, -0.0, 1e-310, 1.7976931348623157e308, 2.0**-1074, 123456789.123456789],
    "ints": [0, -1, 2**63, -(2**100)],
    "text": ["", "plain", "ünïcödé ∑ 漢字 🚀", "quote \" backslash \\ newline \n tab \t nul \x00", "lone \ud800"],
    "nested": {"a": {"b": {"c": [[], {}, [None, True, False]]}}},
    "empty": {},
}


@pytest.mark.parametrize("value", [NESTED, [1, "two", 3.0, None], "just a string", 42, 2.5, True, None, [], {}])
def test_round_trip_exact(cache, tmp_path, value):
    cache.put("ns", "k", value)
    for reader in (cache, ResultCache(cache.path, version="1.0")):  # same instance and a fresh one
        got = reader.get("ns", "k", default="absent")
        assert got == value and type(got) is type(value)
    if value is NESTED:
        floats = ResultCache(cache.path, version="1.0").get("ns", "k")["floats"]
        assert [x.hex() for x in floats] == [x.hex() for x in NESTED["floats"]]  # bit-exact, -0.0 included


def test_non_finite_floats_round_trip(cache):
    cache.put("ns", "k", [math.inf, -math.inf, math.nan])
    got = cache.get("ns", "k")
    assert got[:2] == [math.inf, -math.inf] and math.isnan(got[2])


def test_get_absent_and_default(cache):
    assert cache.get("ns", "missing") is None
    assert cache.get("ns", "missing", default={"d": 1}) == {"d": 1}
    assert len(cache) == 0 and cache.keys("ns") == []


def test_put_overwrites_delete_clear_keys_len(cache):
    cache.put("search", "b", 1)
    cache.put("search", "a", 2)
    cache.put("tune", "a", 3)
    cache.put("search", "b", {"new": True})  # overwrite
    assert cache.get("search", "b") == {"new": True}
    assert cache.get("search", "a") == 2 and cache.get("tune", "a") == 3  # namespaces are separate
    assert cache.keys("search") == ["a", "b"] and cache.keys("tune") == ["a"] and cache.keys("other") == []
    assert len(cache) == 3
    cache.delete("search", "a")
    cache.delete("search", "never-there")
    assert cache.get("search", "a") is None and len(cache) == 2
    cache.clear("tune")
    assert cache.keys("tune") == [] and cache.keys("search") == ["b"]
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("value,where", [((1, 2), r"tuple .* at value$"), ({1: "x"}, "dict key 1"),
                                         ({"s": {1, 2}}, r"set .* at value\['s'\]"), ([object()], "object"),
                                         ({"k": [0, b"bytes"]}, r"bytes .* at value\['k'\]\[1\]")])
def test_put_rejects_values_that_do_not_round_trip(cache, value, where):
    for target in (cache, NullCache()):
        with pytest.raises(TypeError, match=rf"'my-ns'/'my-key'.*{where}"):
            target.put("my-ns", "my-key", value)
    assert cache.get("my-ns", "my-key") is None


def test_put_rejects_circular_values(cache):
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="circular"):
        cache.put("ns", "k", loop)
    shared = [1]
    cache.put("ns", "k", [shared, shared])  # shared, not circular: fine
    assert cache.get("ns", "k") == [[1], [1]]


def test_names_must_be_strings(cache):
    with pytest.raises(TypeError, match="namespace"):
        cache.put(1, "k", 1)
    with pytest.raises(TypeError, match="key"):
        cache.get("ns", ("k",))
    with pytest.raises(ValueError, match="surrogate"):
        cache.put("ns", "bad \udc80", 1)


def test_other_versions_read_as_absent(cache):
    cache.put("ns", "k", "from 1.0")
    newer = ResultCache(cache.path, version="2.0")
    assert newer.get("ns", "k") is None and newer.keys("ns") == [] and len(newer) == 0
    newer.put("ns", "k", "from 2.0")  # replaces the old entry
    assert newer.get("ns", "k") == "from 2.0" and cache.get("ns", "k") is None
    cache.put("ns", "other", 1)
    assert newer.prune() == 1 and cache.get("ns", "other") is None and newer.get("ns", "k") == "from 2.0"


def test_entries_record_version_and_time(cache):
    import time

    before = time.time()
    cache.put("ns", "k", 1)
    with sqlite3.connect(cache.path) as conn:
        version, created = conn.execute("SELECT version, created FROM entries").fetchone()
    conn.close()
    assert version == "1.0" and before - 1 <= created <= time.time() + 1


def test_stats(cache):
    cache.put("ns", "a", "x" * 10_000)
    cache.put("ns", "b", 1)
    stats = cache.stats()
    assert isinstance(stats, CacheStats)
    assert stats.path == cache.path and stats.entries == 2 and stats.size_bytes >= 10_000
    with pytest.raises(AttributeError):
        stats.entries = 3  # frozen


def test_null_cache_stores_nothing():
    null = NullCache()
    null.put("ns", "k", {"a": 1})
    assert null.get("ns", "k") is None and null.get("ns", "k", default=5) == 5
    null.delete("ns", "k")
    null.clear()
    null.clear("ns")
    assert null.keys("ns") == [] and len(null) == 0 and null.prune() == 0
    assert null.stats() == CacheStats(path=None, entries=0, size_bytes=0)
    assert not null.enabled


def test_null_cache_has_the_result_cache_interface():
    public = {name for name in vars(ResultCache) if not name.startswith("_") and name != "disabled"}
    assert public <= set(dir(NullCache)), public - set(dir(NullCache))


# -- damage and unusable locations ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random", "text", "truncated-header"])
def test_corrupt_file_is_moved_aside_and_rebuilt(cache, caplog, damage):
    cache.put("ns", "k", 1)
    data = cache.path.read_bytes()
    if damage == "random":
        cache.path.write_bytes(os.urandom(len(data)))
    elif damage == "text":
        cache.path.write_text("this is not a database\n" * 100)
    else:
        cache.path.write_bytes(data[:50])
    fresh = ResultCache(cache.path, version="1.0")
    caplog.set_level(logging.WARNING, LOGGER)
    assert fresh.get("ns", "k") is None  # no exception
    assert any("corrupt" in r.getMessage() for r in _warnings(caplog))
    assert cache.path.with_name(cache.path.name + ".corrupt").exists()
    fresh.put("ns", "k", 2)
    assert fresh.get("ns", "k") == 2 and fresh.enabled
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_corruption_after_open_is_detected_mid_use(cache, caplog):
    cache.put("ns", "k", 1)  # opened and checked
    cache.path.write_bytes(os.urandom(cache.path.stat().st_size))
    caplog.set_level(logging.WARNING, LOGGER)
    assert cache.get("ns", "k") is None
    assert any("corrupt" in r.getMessage() for r in _warnings(caplog))
    cache.put("ns", "k", 3)
    assert cache.get("ns", "k") == 3


def test_damaged_pages_are_detected(cache, caplog):
    for i in range(200):
        cache.put("ns", f"k{i}", "v" * 200)
    data = bytearray(cache.path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[page:] = os.urandom(len(data) - page)  # keep the header, scramble every page after the first
    cache.path.write_bytes(bytes(data))
    fresh = ResultCache(cache.path, version="1.0")
    caplog.set_level(logging.WARNING, LOGGER)
    assert fresh.get("ns", "k5") is None
    assert any("corrupt" in r.getMessage() for r in _warnings(caplog))
    fresh.put("ns", "k5", 1)
    assert fresh.get("ns", "k5") == 1


def test_path_under_a_file_degrades_to_a_null_cache(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    c = ResultCache(blocker / "sub" / "results.sqlite", version="1")
    caplog.set_level(logging.WARNING, LOGGER)
    c.put("ns", "k", 1)
    assert c.get("ns", "k") is None
    c.put("ns", "k2", 2)
    c.delete("ns", "k")
    c.clear()
    assert c.keys("ns") == [] and len(c) == 0 and c.stats().entries == 0
    assert not c.enabled
    assert len(_warnings(caplog)) == 1, [r.getMessage() for r in _warnings(caplog)]  # warned once
    with pytest.raises(TypeError):  # bad values are still refused
        c.put("ns", "k", {1, 2})


def test_default_dir_under_a_file_degrades(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))
    with pytest.raises(OSError):
        cache_dir()
    c = open_cache(version="1")
    caplog.set_level(logging.WARNING, LOGGER)
    c.put("ns", "k", 1)
    assert c.get("ns", "k") is None and len(_warnings(caplog)) == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_degrades(tmp_path, caplog):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        c = ResultCache(locked / "results.sqlite", version="1")
        caplog.set_level(logging.WARNING, LOGGER)
        c.put("ns", "k", 1)
        assert c.get("ns", "k") is None and not c.enabled
        c.put("ns", "k", 1)
        assert len(_warnings(caplog)) == 1
    finally:
        locked.chmod(0o700)


def test_schema_version_mismatch_recreates_the_table(cache, caplog):
    cache.put("ns", "k", 1)
    with sqlite3.connect(cache.path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 100,))
    conn.close()
    caplog.set_level(logging.INFO, LOGGER)
    reopened = ResultCache(cache.path, version="1.0")
    assert reopened.get("ns", "k") is None
    assert any(r.levelno == logging.INFO and "schema version" in r.getMessage() for r in caplog.records)
    assert not _warnings(caplog)
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
    reopened.put("ns", "k", 2)
    assert reopened.get("ns", "k") == 2


def test_uses_wal_journal(cache):
    cache.put("ns", "k", 1)
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


# -- concurrency ----------------------------------------------------------------------------------------------

SHARED_KEYS = 10
ROUNDS = 50


def _value(writer, i):
    return {"writer": writer, "i": i, "payload": [writer * 1000 + i, f"w{writer}-{i}", 0.1 * i]}


def _check(value):
    return isinstance(value, dict) and value == _value(value.get("writer"), value.get("i"))


def _worker(path, writer, barrier, results):
    """One process: ROUNDS puts of shared and private keys interleaved with gets; reports problems seen."""
    problems = []

    class Collect(logging.Handler):
        def emit(self, record):
            problems.append(f"log: {record.getMessage()}")

    logging.getLogger(LOGGER).addHandler(Collect(logging.WARNING))
    try:
        c = ResultCache(pathlib.Path(path), version="1")
        barrier.wait(timeout=120)
        for i in range(ROUNDS):
            c.put("shared", f"k{i % SHARED_KEYS}", _value(writer, i))
            c.put(f"private-{writer}", f"k{i}", _value(writer, i))
            got = c.get("shared", f"k{(i * 7 + writer) % SHARED_KEYS}")
            if got is not None and not _check(got):
                problems.append(f"bad shared value {got!r}")
            if c.get(f"private-{writer}", f"k{i}") != _value(writer, i):
                problems.append(f"own write k{i} not read back")
            if i % 10 == 0:
                c.keys("shared")
                len(c)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        problems.append(f"{type(exc).__name__}: {exc}")
    results.put((writer, problems))


def test_processes_share_one_cache(tmp_path):
    path = tmp_path / "shared" / "results.sqlite"
    writers = 4
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), w, barrier, results)) for w in range(writers)]
    for p in procs:
        p.start()
    try:
        reports = dict(results.get(timeout=300) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert reports == {w: [] for w in range(writers)}
    c = ResultCache(path, version="1")
    for w in range(writers):
        assert c.keys(f"private-{w}") == sorted(f"k{i}" for i in range(ROUNDS))
        assert all(c.get(f"private-{w}", f"k{i}") == _value(w, i) for i in range(ROUNDS))
    for k in range(SHARED_KEYS):
        got = c.get("shared", f"k{k}")
        assert _check(got) and got["i"] % SHARED_KEYS == k  # some writer's last value for that key
    assert len(c) == SHARED_KEYS + writers * ROUNDS
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_threads_share_one_instance(cache):
    errors = []

    def run(t):
        try:
            for i in range(40):
                cache.put("shared", f"k{i % 5}", _value(t, i))
                cache.put("t", f"{t}-{i}", i)
                got = cache.get("shared", f"k{(i + t) % 5}")
                assert got is None or _check(got)
                assert cache.get("t", f"{t}-{i}") == i
        except Exception as exc:  # noqa: BLE001 - re-raised in the main thread's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache.keys("t")) == 160 and len(cache.keys("shared")) == 5


def test_last_writer_wins(cache):
    other = ResultCache(cache.path, version="1.0")
    cache.put("ns", "k", "first")
    other.put("ns", "k", "second")
    assert cache.get("ns", "k") == "second"
    cache.put("ns", "k", "third")
    assert other.get("ns", "k") == "third"


# -- layering -------------------------------------------------------------------------------------------------


def test_cache_imports_only_the_standard_library():
    """Loading the cache imports nothing of prism_jax beyond itself, and no jax (checked in a fresh interpreter)."""
    code = ("import sys, types; "
            f"sys.path.insert(0, {str(PACKAGE.parent)!r}); "
            f"pkg = types.ModuleType('prism_jax'); pkg.__path__ = [{str(PACKAGE)!r}]; sys.modules['prism_jax'] = pkg; "
            "import prism_jax.cache; "
            "ours = sorted(m for m in sys.modules if m.startswith('prism_jax.') and not m.startswith('prism_jax.cache')); "
            "assert not ours, ours; assert 'jax' not in sys.modules and 'numpy' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
