"""Decode lanes: worker processes that die, clean shutdown, threads == processes."""
from __future__ import annotations

import concurrent.futures as cf
import gc
import inspect
import os
import signal
import threading
import time

import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import T0, direct_read, random_walk
from mef3io_server.client import Mef3Client
from mef3io_server.server.decode import ProcessDecoder, Source, ThreadDecoder, open_reader

S = 1_000_000


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from conftest import write_session

    d = tmp_path_factory.mktemp("decode")
    n = 20 * 60 * 256
    chans = {f"c{i}": random_walk(n, 50 + i) for i in range(6)}
    gap = random_walk(n, 99)
    gap[256 * 100:256 * 130] = np.nan
    chans["gappy"] = gap
    return write_session(d / "decode.mefd", chans)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def decode_workers(pid: int) -> list[psutil.Process]:
    """The pool workers: children of the forkserver, a child of the server."""
    out = []
    for child in psutil.Process(pid).children():
        try:
            out.extend(child.children())
        except psutil.NoSuchProcess:
            pass
    return out


def all_gone(procs, timeout=15.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def pool_server(start_server):
    return start_server(USE_PROCESS_POOL="true", READER_PROCESSES="2", PREFETCH_PROCESSES="1",
                        TILE_DURATION_S="10", PREFETCH_AHEAD_WINDOWS="0",
                        PREFETCH_BEHIND_WINDOWS="0", SHUTDOWN_GRACE_S="3")


def warm_pool_server(start_server, recording):
    """A process-pool server that has decoded once, and its descendant processes."""
    h = pool_server(start_server)
    with Mef3Client(h.address) as c:
        assert c.open_file(str(recording))["file_opened"]
        c.get_signal_range(str(recording), ["c0"], T0, T0 + S)
    return h, descendants(h.proc.pid)


def test_process_pool_server_reads_and_workers_stay_up(start_server, recording):
    h = pool_server(start_server)
    with Mef3Client(h.address) as c:
        assert c.open_file(str(recording))["file_opened"]
        t0, t1 = T0 + 95 * S + 17, T0 + 140 * S
        r = c.get_signal_range(str(recording), [], t0, t1)
        assert r["error_message"] == ""
        assert np.array_equal(r["array"], direct_read(recording, [], t0, t1), equal_nan=True)
        before = {p.pid for p in decode_workers(h.proc.pid)}
        assert len(before) >= 2
        time.sleep(2.0)          # idle workers must not exit on their own
        after = {p.pid for p in decode_workers(h.proc.pid)}
        assert before <= after, "idle decode workers exited"
        assert "rebuilding" not in h.stderr_text()


@pytest.mark.slow
def test_killed_worker_mid_read_then_pool_rebuilt(start_server, recording):
    h = pool_server(start_server)
    c = Mef3Client(h.address)
    try:
        assert c.open_file(str(recording))["file_opened"]
        t0, t1 = T0 + 3, T0 + 10 * 60 * S - 3       # half the (cold) recording: 60 tiles
        ref = direct_read(recording, [], t0, t1)
        box = {}

        def read():
            box["r"] = c.get_signal_range(str(recording), [], t0, t1)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)
        victims = decode_workers(h.proc.pid)
        assert victims
        for p in victims:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        reader.join(120)
        assert not reader.is_alive(), "the read hung after its worker died"
        r = box["r"]
        if r["error_message"]:
            assert "worker" in r["error_message"] or "decod" in r["error_message"]
        else:
            assert np.array_equal(r["array"], ref, equal_nan=True)
        # the server lives on and the rebuilt pool decodes correctly
        assert h.proc.poll() is None
        for a, b in [(T0 + 200 * S + 5, T0 + 260 * S), (T0 + 600 * S, T0 + 700 * S + 999)]:
            r = c.get_signal_range(str(recording), ["c1", "gappy"], a, b)
            assert r["error_message"] == "", r["error_message"]
            assert np.array_equal(r["array"], direct_read(recording, ["c1", "gappy"], a, b),
                                  equal_nan=True)
        assert decode_workers(h.proc.pid)
        assert "rebuilding the pool" in h.stderr_text()
    finally:
        c.shutdown()


@pytest.mark.slow
def test_sigterm_during_reads_leaves_no_children(start_server, recording):
    h, kids = warm_pool_server(start_server, recording)
    assert len(kids) >= 3          # forkserver (+ tracker) and workers
    results = []

    def read(i):
        import grpc

        try:
            with Mef3Client(h.address) as c2:
                c2.open_file(str(recording))
                results.append(c2.get_signal_range(str(recording), [], T0 + i * 60 * S,
                                                   T0 + (i + 4) * 60 * S))
        except grpc.RpcError as e:   # the server went away: the call ends, cleanly
            results.append({"array": None, "error_message": f"rpc ended: {e.code()}"})

    threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    code = h.stop(signal.SIGTERM, timeout=60)
    for t in threads:
        t.join(60)
    assert code == 0, h.stderr_text()[-2000:]
    assert not all_gone(kids), "child processes outlived the server"
    assert len(results) == 3, "a read neither finished nor ended"
    for r in results:   # every in-flight read finished or ended with a clear error
        assert (r["array"] is not None and r["error_message"] == "") or r["error_message"]


def test_sigkill_of_server_leaves_no_orphan_workers(start_server, recording):
    h, kids = warm_pool_server(start_server, recording)
    assert kids
    h.proc.kill()
    h.proc.wait()
    assert not all_gone(kids, timeout=20), "decode workers orphaned after the server died"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGTERM, signal.SIGINT])
def test_thread_server_sigterm_exits_cleanly(start_server, recording, sig):
    """SIGTERM right after a read stops the server gracefully (exit 0, not killed).

    It used to be ignored whenever the kernel delivered it to a gRPC thread
    while the main thread sat in an untimed wait: the server ran on until killed.
    """
    h = start_server()
    with Mef3Client(h.address) as c:
        assert c.open_file(str(recording))["file_opened"]
        assert c.get_signal_range(str(recording), [], T0, T0 + 30 * S)["error_message"] == ""
    assert descendants(h.proc.pid) == []
    assert h.stop(sig, timeout=20) == 0, h.stderr_text()[-2000:]
    assert "draining" in h.stderr_text()


@pytest.fixture
def slow_forkserver(tmp_path):
    """Environment in which multiprocessing's forkserver takes 3 s to start.

    A ``sitecustomize`` that sleeps in the forkserver only: what a busy machine
    does to its first start (it imports numpy and mef3io). Workers cannot start
    before it is up.
    """
    site = tmp_path / "slow_forkserver"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys, time\n"
        "if any('multiprocessing.forkserver' in a for a in getattr(sys, 'orig_argv', [])):\n"
        "    time.sleep(3.0)\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_process_pool_server_starts_while_its_workers_start_slowly(start_server, recording,
                                                                   slow_forkserver):
    """Workers still starting are not dead workers: the server starts and serves.

    The pool watchdog took a pool without a live worker for a wedged one, so on
    a busy machine the server failed to start ("no live decode worker").
    """
    h = start_server(USE_PROCESS_POOL="true", READER_PROCESSES="2", PREFETCH_PROCESSES="1",
                     **slow_forkserver)
    with Mef3Client(h.address) as c:
        assert c.open_file(str(recording))["file_opened"]
        t0, t1 = T0 + 95 * S + 17, T0 + 140 * S
        r = c.get_signal_range(str(recording), [], t0, t1)
        assert np.array_equal(r["array"], direct_read(recording, [], t0, t1), equal_nan=True)
    assert "wedged" not in h.stderr_text()


def test_slowly_started_decoder_leaves_no_worker_and_its_process_exits(recording,
                                                                       slow_forkserver):
    """A process that used a ProcessDecoder exits once it is closed.

    A pool given up while its worker was still starting leaked that worker:
    Python then waited for it at exit for ever (the test suite hung after its
    summary line).
    """
    script = Path(__file__).with_name("slow_start_decoder.py")
    env = {**os.environ, **slow_forkserver}
    try:
        done = subprocess.run([sys.executable, str(script), str(recording), str(T0)], env=env,
                              capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the process did not exit: {e.stdout!r} {e.stderr!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok (3, 76800) wedged 0" in done.stdout, done.stdout + done.stderr[-3000:]


def test_process_decoder_close_leaves_no_worker(recording):
    """When close() returns, every worker process of the decoder has exited."""
    dec = ProcessDecoder(2, 1)
    src = Source(str(recording), 1)
    try:
        dec.warm_up()
        futs = [dec.submit(src, ["c0", "c1"], T0 + i * 60 * S, T0 + (i + 2) * 60 * S,
                           lane="fg" if i % 2 else "bg") for i in range(6)]
        futs[0].result(60)
        pids = dec.worker_pids()
        assert len(pids) == 3
    finally:
        dec.close()
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"decode workers outlived close(): {alive}"


def test_process_pool_server_shuts_down_without_tracebacks(start_server, recording):
    """SIGTERM: exit 0, and nothing but log lines on stderr (no multiprocessing tracebacks);
    every child (workers, forkserver, resource tracker) has ended when the server has."""
    h, kids = warm_pool_server(start_server, recording)
    with Mef3Client(h.address) as c:
        assert c.open_file(str(recording))["file_opened"]
        for i in range(4):
            c.get_signal_range(str(recording), [], T0 + i * 60 * S, T0 + (i + 1) * 60 * S)
    assert h.stop(signal.SIGTERM, timeout=60) == 0
    left = [p.pid for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"children outlived the server: {left}"
    err = h.stderr_text()
    assert "Traceback" not in err and "Error" not in err, err[-3000:]


def test_thread_and_process_decoders_agree(recording):
    src = Source(str(recording), 1)
    reader = open_reader(str(recording))
    threads = ThreadDecoder(2, 1, lambda s: reader)
    procs = ProcessDecoder(2, 1)
    try:
        names = ["c0", "gappy", "c3"]
        rng = np.random.default_rng(1)
        wins = [(T0 + int(rng.integers(-60 * S, 21 * 60 * S)), None) for _ in range(6)]
        wins = [(a, a + int(rng.integers(1, 90 * S))) for a, _ in wins]
        wins.append((T0 + 99 * S + 1, T0 + 131 * S))     # across the gap
        futs = [(w, procs.submit(src, names, *w), threads.submit(src, names, *w, lane="bg"))
                for w in wins]
        for (a, b), fp, ft in futs:
            p, t = fp.result(60), ft.result(60)
            ref = direct_read(recording, names, a, b)
            assert p.dtype == t.dtype == np.float32
            assert np.array_equal(p, t, equal_nan=True) and np.array_equal(p, ref, equal_nan=True)
        assert np.array_equal(threads.decode(src, names, *wins[0]),
                              procs.decode(src, names, *wins[0]), equal_nan=True)
    finally:
        threads.close()
        procs.close()
        reader.close()


def test_process_decoder_close_settles_pending_decodes(recording):
    """Decodes queued when the pool shuts down end with an error, never hang."""
    procs = ProcessDecoder(1, 1)
    src = Source(str(recording), 1)
    futs = [procs.submit(src, ["c0", "c1", "c2"], T0 + i * 60 * S, T0 + (i + 5) * 60 * S)
            for i in range(12)]
    procs.close()
    for f in futs:
        try:
            out = f.result(60)
            assert out.shape[0] == 3
        except Exception as e:  # noqa: BLE001
            assert "shutting down" in str(e) or "worker" in str(e)
    assert not procs.worker_pids()


def _resources() -> tuple[int, int, int]:
    """(threads, open fds, live ProcessPoolExecutor objects) of this process."""
    gc.collect()
    pools = sum(isinstance(o, cf.ProcessPoolExecutor) for o in gc.get_objects())
    return threading.active_count(), len(os.listdir("/proc/self/fd")), pools


def _wait_for(cond, timeout=60.0) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_wedged_decode_pools_are_released(recording):
    """A worker killed while writing its result wedges its pool's manager thread.

    The watchdog gives such a pool up and retries its decodes on a new pool;
    it used to leave the blocked manager thread, the call-queue feeder thread
    and their pipes behind, per wedge, until exit. After three wedges the
    threads, fds and pools are back to the start, and no manager is stuck.
    """
    import wedge_worker

    dec = ProcessDecoder(1, 1)
    src = Source(str(recording), 1)
    names = ["c0", "gappy"]
    a, b = T0 + 95 * S, T0 + 105 * S
    ref = direct_read(recording, names, a, b)
    try:
        dec.warm_up()
        assert np.array_equal(dec.decode(src, names, a, b), ref, equal_nan=True)
        start = _resources()
        for i in range(3):
            dec._pool("fg").submit(wedge_worker.die_mid_result)
            out = dec.submit(src, names, a, b).result(120)    # queued behind the wedge
            assert np.array_equal(out, ref, equal_nan=True)
            assert _wait_for(lambda: dec.wedged == i + 1), f"wedge {i + 1} not detected"
        # At most the start: threads of earlier tests may still be ending.
        def back() -> bool:
            return all(now <= then for now, then in zip(_resources(), start))
        _wait_for(back)
        assert back(), ("a wedged pool left threads, fds or itself behind "
                        f"(threads, fds, pools): {_resources()} > {start}")
        assert dec.stuck == 0
    finally:
        dec.close()


@pytest.mark.parametrize("use_process_pool", [False, True])
def test_reads_leave_no_cyclic_garbage(recording, use_process_pool):
    """Decoded samples are freed by reference counting when a read is done.

    Closures that called each other (the decode retry, the tile-run decode)
    made reference cycles that held every finished decode's future and its
    samples until the garbage collector's next pass: hundreds of MB under
    load with the process pool. With the collector off during the reads, a
    collection afterwards must find no future and none of those functions.
    """
    from mef3io_server.server.config import Settings
    from mef3io_server.server.engine import Engine

    eng = Engine(Settings(port=0, use_process_pool=use_process_pool, reader_processes=2,
                          prefetch_processes=1, tile_duration_s=10.0))
    eng.start()
    gc.collect()
    gc.disable()
    try:
        eng.open_file("a", str(recording))
        names = ["c0", "c1", "c2", "c3", "c4", "c5", "gappy"]
        for i in range(12):
            t0 = T0 + (i * 97 % 1100) * S + 13
            read = eng.read_signal("a", str(recording), names, t0, t0 + 60 * S)
            rows = np.concatenate([r for _, _, _, r in read.chunks], axis=1)
            assert rows.shape[0] == len(names)
            del read, rows
        if use_process_pool:        # the path the foreground read does not take inline
            futs = [eng.decoder.submit(Source(str(recording), 1), names[:2],
                                       T0 + k * 30 * S, T0 + (k + 1) * 30 * S)
                    for k in range(8)]
            for f in futs:
                f.result(60)
            del futs, f
        time.sleep(0.5)             # prefetches finish (a pending one is not garbage)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        eng.close()
    futures = [o for o in garbage if isinstance(o, cf.Future)]
    funcs = sorted({o.__qualname__ for o in garbage if inspect.isfunction(o)})
    del garbage
    assert not futures, f"{len(futures)} futures in reference cycles; functions: {funcs}"
    tile_path = ("TileStore.", "TileFetcher.", "WindowAssembler.", "WindowShare.", "Prefetcher.")
    assert not [f for f in funcs if f.startswith(("ProcessDecoder.",) + tile_path)], funcs
