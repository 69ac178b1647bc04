"""RecentKeys: the bounded memory of recent keys the prefetch, window sharing,
derived reads, kept answers and the prefetch ledger use."""
from __future__ import annotations

import threading

import pytest

from mef3io_server.server.recent_keys import RecentKeys


def test_holds_at_most_its_limit_dropping_the_key_put_longest_ago():
    r = RecentKeys(3)
    for k in "abcd":
        r.put(k, k.upper())
    assert len(r) == 3 and "a" not in r and r.keys() == {"b", "c", "d"}
    r.put("b", "again")                  # newest again: c is now the oldest
    r.put("e")
    assert r.keys() == {"b", "d", "e"} and r.get("b") == "again" and r.get("e") is None
    assert r.get("c", 7) == 7


def test_add_says_whether_the_key_is_new():
    r = RecentKeys(2)
    assert r.add("x") is True
    assert r.add("x") is False
    assert r.add("y") and r.add("z")     # x pushed out
    assert r.add("x") is True


def test_batches_and_forgetting():
    r = RecentKeys(10)
    r.put_many([(1, i) for i in range(4)] + [(2, 0)])
    assert r.pop_many([(1, 0), (1, 1), (9, 9)]) == 2
    assert r.forget_where(lambda k: k[0] == 1) == 2
    assert r.keys() == {(2, 0)} and bool(r)
    assert r.pop((2, 0), "gone") is None and r.pop((2, 0), "gone") == "gone" and not r


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit of 0"):
        RecentKeys(0)


def test_many_threads_never_pass_the_limit():
    r = RecentKeys(100)

    def work(t):
        for i in range(5000):
            r.put((t, i), i)
            r.add((t, i % 7))
            r.pop((t, i - 3))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert 0 < len(r) <= 100
