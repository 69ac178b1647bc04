"""TileCache: the reference page's API and properties, plus the operator counters."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mef3io_server.server.tile_cache import TileCache


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def tile(n: int, value: float = 1.0, dtype=np.float32) -> np.ndarray:
    return np.full(n, value, dtype=dtype)


def held_bytes(cache: TileCache) -> int:
    return cache.held_bytes()[1]


# ---------------------------------------------------------------- API


def test_public_api_signatures():
    c = TileCache(1024)
    assert c.ttl_seconds is None
    c2 = TileCache(1024, ttl_seconds=5)
    assert c2.ttl_seconds == 5.0
    for name in ("put", "get", "evict_expired", "evict_matching", "stats"):
        assert callable(getattr(c, name))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True, None])
def test_max_bytes_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        TileCache(bad)


def test_negative_ttl_refused():
    with pytest.raises(ValueError, match="ttl_seconds"):
        TileCache(100, ttl_seconds=-1)


def test_get_missing_is_none():
    c = TileCache(1024)
    assert c.get("nope") is None
    assert c.stats().misses == 1


# ---------------------------------------------------------------- dtype and copies


def test_float32_stored_without_copy():
    c = TileCache(1024)
    a = tile(10)
    c.put("k", a)
    got = c.get("k")
    assert got.dtype == np.float32
    assert np.shares_memory(got, a), "a float32 tile must not be copied"
    assert not got.flags.writeable, "callers must not alter a cached tile"
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.int32])
def test_other_dtypes_cast_to_float32(dtype):
    c = TileCache(1024)
    a = np.arange(10).astype(dtype)
    c.put("k", a)
    got = c.get("k")
    assert got.dtype == np.float32
    assert not np.shares_memory(got, a)
    np.testing.assert_array_equal(got, a.astype(np.float32))
    assert c.stats().bytes == 40


def test_list_input_accepted():
    c = TileCache(1024)
    c.put("k", [1.0, 2.0, float("nan")])
    got = c.get("k")
    assert got.dtype == np.float32 and got.shape == (3,)


# ---------------------------------------------------------------- presence vs gaps


def test_not_loaded_distinct_from_loaded_with_nan():
    c = TileCache(1024)
    gap = np.array([1.0, np.nan, np.nan, 4.0], dtype=np.float32)
    allnan = np.full(4, np.nan, dtype=np.float32)
    c.put("gap", gap)
    c.put("allnan", allnan)
    assert c.get("absent") is None
    g = c.get("gap")
    assert g is not None and np.isnan(g[1]) and g[0] == 1.0
    n = c.get("allnan")
    assert n is not None and n.shape == (4,) and np.isnan(n).all()
    assert "allnan" in c and "absent" not in c


# ---------------------------------------------------------------- byte budget and LRU


def test_budget_evicts_least_recently_used_first():
    c = TileCache(400)            # room for 4 tiles of 100 bytes
    for k in "abcd":
        c.put(k, tile(25))
    assert c.get("a") is not None  # a becomes most recent: b is now the LRU
    c.put("e", tile(25))
    assert "b" not in c
    assert all(k in c for k in "acde")
    c.put("f", tile(25))
    assert "c" not in c
    assert c.stats().evictions == 2
    assert c.current_bytes == 400


def test_put_refreshes_recency():
    c = TileCache(300)
    for k in "abc":
        c.put(k, tile(25))
    c.put("a", tile(25, 2.0))      # replacing refreshes a
    c.put("d", tile(25))
    assert "b" not in c and "a" in c
    assert c.get("a")[0] == 2.0


def test_budget_by_bytes_not_items():
    c = TileCache(1000)
    c.put("small1", tile(10))       # 40 B
    c.put("small2", tile(10))       # 40 B
    c.put("big", tile(200))         # 800 B -> 880 total, fits
    assert len(c) == 3
    c.put("big2", tile(200))        # needs 800 more: LRU small1, small2, big go
    assert "big2" in c and "big" not in c
    assert c.current_bytes <= 1000


def test_replace_accounts_bytes():
    c = TileCache(1000)
    c.put("k", tile(100))
    c.put("k", tile(50))
    assert c.current_bytes == 200
    assert len(c) == 1


def test_tile_larger_than_budget_never_kept():
    c = TileCache(100)
    c.put("ok", tile(10))
    c.put("huge", tile(26))          # 104 B > 100 B
    assert c.get("huge") is None
    assert "ok" in c, "an oversize tile must not flush the cache"
    assert c.stats().rejected == 1


def test_oversize_replacement_removes_stale_tile():
    c = TileCache(100)
    c.put("k", tile(10))
    c.put("k", tile(30))             # too big: the old value must not survive as stale
    assert c.get("k") is None
    assert c.current_bytes == 0


def test_tile_exactly_budget_kept():
    c = TileCache(100)
    c.put("k", tile(25))
    assert c.get("k") is not None and c.current_bytes == 100


# ---------------------------------------------------------------- TTL


def test_idle_ttl_with_injected_clock():
    clock = FakeClock()
    c = TileCache(10_000, ttl_seconds=10, clock=clock)
    c.put("a", tile(4))
    clock.t += 6
    c.put("b", tile(4))
    clock.t += 5                      # a idle 11 s, b idle 5 s
    assert c.evict_expired() == 1
    assert "a" not in c and "b" in c
    assert c.stats().expirations == 1


def test_get_refreshes_idle_time():
    clock = FakeClock()
    c = TileCache(10_000, ttl_seconds=10, clock=clock)
    c.put("a", tile(4))
    c.put("b", tile(4))
    clock.t += 8
    assert c.get("a") is not None
    clock.t += 8                       # a idle 8 s, b idle 16 s
    assert c.evict_expired() == 1
    assert "a" in c and "b" not in c


def test_evict_expired_explicit_now():
    clock = FakeClock(0.0)
    c = TileCache(10_000, ttl_seconds=1, clock=clock)
    c.put("a", tile(4))
    assert c.evict_expired(now=0.5) == 0
    assert c.evict_expired(now=2.0) == 1
    assert c.current_bytes == 0


def test_contains_is_not_an_access():
    clock = FakeClock()
    c = TileCache(10_000, ttl_seconds=10, clock=clock)
    c.put("a", tile(4))
    clock.t += 8
    assert "a" in c
    clock.t += 3
    assert c.evict_expired() == 1
    assert c.stats().hits == 0 and c.stats().misses == 0


@pytest.mark.parametrize("ttl", [None, 0])
def test_ttl_disabled_is_noop(ttl):
    clock = FakeClock()
    c = TileCache(10_000, ttl_seconds=ttl, clock=clock)
    c.put("a", tile(4))
    clock.t += 1e9
    assert c.evict_expired() == 0
    assert "a" in c


# ---------------------------------------------------------------- evict_matching


def test_evict_matching_purges_one_file():
    c = TileCache(10_000)
    for f in ("f1", "f2"):
        for k in range(3):
            c.put((f, "ch", 256.0, k), tile(4))
    assert c.evict_matching(lambda key: key[0] == "f1") == 3
    assert len(c) == 3 and all(k[0] == "f2" for k in c.keys())
    assert c.current_bytes == 3 * 16
    assert c.stats().purged == 3
    assert c.evict_matching(lambda key: False) == 0


# ---------------------------------------------------------------- counters


def test_stats_counts():
    c = TileCache(200)
    c.put("a", tile(30))
    c.put("b", tile(30))   # 240 B > 200 B: evicts a
    c.get("a")
    c.get("b")
    c.put("c", tile(100))  # rejected
    s = c.stats()
    assert (s.hits, s.misses, s.puts, s.evictions, s.rejected) == (1, 1, 2, 1, 1)
    assert (s.items, s.bytes, s.max_bytes) == (1, 120, 200)


def test_get_many_in_order():
    c = TileCache(1000)
    c.put("a", tile(2, 1.0))
    c.put("b", tile(2, 2.0))
    got = c.get_many(["b", "x", "a"])
    assert got[0][0] == 2.0 and got[1] is None and got[2][0] == 1.0
    assert c.stats().hits == 2 and c.stats().misses == 1


def test_clear():
    c = TileCache(1000)
    c.put("a", tile(2))
    c.clear()
    assert len(c) == 0 and c.current_bytes == 0


# ---------------------------------------------------------------- threads


def test_thread_safety_under_concurrent_put_get():
    budget = 64 * 1024
    c = TileCache(budget, ttl_seconds=1000)
    errors: list[BaseException] = []
    violations: list[str] = []
    stop = threading.Event()
    sizes = [16, 100, 1000, 4000, 17000]   # the last one (68 kB) is over budget

    def worker(seed: int):
        rng = np.random.default_rng(seed)
        try:
            for i in range(3000):
                key = ("f", int(rng.integers(0, 40)))
                n = sizes[key[1] % len(sizes)]
                op = rng.integers(0, 10)
                if op < 5:
                    c.put(key, np.full(n, float(key[1]), dtype=np.float64 if i % 2 else np.float32))
                elif op < 9:
                    got = c.get(key)
                    if got is not None:
                        # a tile is always the whole, uncorrupted array put under that key
                        if got.shape != (n,) or not (got == key[1]).all():
                            violations.append(f"corrupt tile {key}")
                else:
                    c.evict_matching(lambda k, s=int(rng.integers(0, 40)): k[1] == s)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def watcher():
        while not stop.is_set():
            s = c.stats()
            if s.bytes > budget:
                violations.append(f"bytes {s.bytes} > budget")
            accounted, real = c.held_bytes()
            if real != accounted:
                violations.append(f"bytes {accounted} != held {real}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    w = threading.Thread(target=watcher)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert not errors, errors
    assert not violations, violations[:5]
    assert c.current_bytes == held_bytes(c) <= budget
    s = c.stats()
    assert s.hits + s.misses > 0 and s.rejected > 0


def test_put_many_is_put_of_each_in_order():
    """put_many (one lock for a decoded tile of many channels) keeps put's rules:
    byte budget, LRU eviction, oversize rejection, replacement accounting."""
    tile = lambda v, n=10: np.full(n, v, dtype=np.float32)   # noqa: E731
    one, many = TileCache(100), TileCache(100)
    items = [("a", tile(1)), ("b", tile(2, 20)), ("a", tile(3)), ("big", tile(4, 30)),
             ("c", tile(5)), ("d", np.arange(5, dtype=np.float64))]
    for k, v in items:
        one.put(k, v)
    many.put_many(items)
    for k in ("a", "b", "big", "c", "d"):
        x, y = one.get(k), many.get(k)
        assert (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    assert one.stats().bytes == many.stats().bytes <= 100
    assert one.stats().evictions > 0 and many.stats().evictions > 0
    assert one.keys() == many.keys()           # same tiles, same LRU order
    assert not many.get("a").flags.writeable and many.get("d").dtype == np.float32
