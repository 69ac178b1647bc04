"""Slow and vanishing clients (issue 6, part 4).

* A client pulling a large window (~190 MB of float32) a chunk at a time with
  pauses: the server produces chunks on demand under gRPC flow control, so its
  memory stays far below the size of the answer.
* Clients that disconnect mid-stream: their streams end (the generator is
  closed), and threads and file handles return to where they were.
"""
from __future__ import annotations

import time

import grpc
import numpy as np
import psutil
import pytest

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server import messages
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

FS = 512.0
SEC = 1_000_000
MB = 2**20
SECONDS = 3 * 3600
N_CH = 4


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """4 channels x 3 h at 512 Hz: a whole-file read is 4 x 5.5 M float32 = 85 MB."""
    path = tmp_path_factory.mktemp("big") / "big.mefd"
    n = int(SECONDS * FS)
    rng = np.random.default_rng(0)
    chans = {f"c{i}": np.round(np.cumsum(rng.standard_normal(n)), 2) for i in range(N_CH)}
    return write_session(path, chans, fs=FS)


def stub_for(address):
    channel = grpc.insecure_channel(address, options=messages.CHANNEL_OPTIONS)
    return channel, pb2_grpc.gRPCMef3ServerStub(channel)


def metadata(cid):
    return ((messages.CLIENT_ID_KEY, cid),)


def server_rss(pid):
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p] + p.children(recursive=True))


def open_big(stub, path, cid):
    resp = stub.OpenFile(messages.open_file_request(str(path)), metadata=metadata(cid), timeout=30)
    assert resp.error_message == ""
    return resp


@pytest.mark.slow
def test_slow_reader_of_a_huge_window_keeps_server_memory_bounded(big, start_server):
    server = start_server(TILE_CACHE_MB=4, PREFETCH_AHEAD_WINDOWS=0, PREFETCH_BEHIND_WINDOWS=0)
    channel, stub = stub_for(server.address)
    open_big(stub, big, "slow")
    t1 = T0 + SECONDS * SEC
    base = server_rss(server.proc.pid)
    answer_bytes = N_CH * int(SECONDS * FS) * 4
    call = stub.GetSignalRange(messages.signal_request(str(big), None, T0, t1),
                               metadata=metadata("slow"), timeout=300)
    rss = []
    first = None
    for i, chunk in enumerate(call):
        assert chunk.error_message == ""
        if first is None:
            first = np.frombuffer(chunk.array_bytes, np.float32).reshape(tuple(chunk.shape))
            off = chunk.sample_offset
        time.sleep(0.3)                # a slow consumer: the server must wait, not buffer
        rss.append(server_rss(server.proc.pid))
        if i == 24:
            break
    call.cancel()
    channel.close()
    assert server.stop() == 0, server.stderr_text()[-2000:]    # drains and exits cleanly
    sent = 25 * len(first.tobytes())
    print("slow-reader RSS over base (MB) per chunk:", [round((r - base) / MB) for r in rss],
          "answer", round(answer_bytes / MB), "MB; sent", round(sent / MB), "MB")
    # The server holds a few chunks and tiles, not the answer (~85 MB) nor what
    # it has sent (~60 MB): memory is flat once the first chunks are out.
    assert max(rss) - base < answer_bytes / 3, [round((r - base) / MB) for r in rss]
    assert max(rss[5:]) - rss[4] < sent / 4, [round((r - base) / MB) for r in rss]
    ref = direct_read(big, [f"c{i}" for i in range(N_CH)], T0, T0 + 60 * SEC)
    m = min(first.shape[1], ref.shape[1])
    assert off == 0 and np.array_equal(first[:, :m], ref[:, :m], equal_nan=True)


def test_vanishing_clients_free_their_streams(big, start_server):
    server = start_server(TILE_CACHE_MB=32)
    proc = psutil.Process(server.proc.pid)
    channel, stub = stub_for(server.address)
    open_big(stub, big, "keeper")     # the recording stays open throughout
    warm = stub.GetSignalRange(messages.signal_request(str(big), None, T0, T0 + 10 * SEC),
                               metadata=metadata("keeper"), timeout=30)
    assert all(c.error_message == "" for c in warm)
    time.sleep(1.0)
    threads0, fds0 = proc.num_threads(), proc.num_fds()
    for k in range(12):
        ch, st = stub_for(server.address)
        open_big(st, big, f"v{k}")
        call = st.GetSignalRange(
            messages.signal_request(str(big), None, T0 + k * 600 * SEC, T0 + (k + 1) * 600 * SEC),
            metadata=metadata(f"v{k}"), timeout=60)
        next(iter(call))              # one chunk, then vanish without a word
        if k % 2:
            call.cancel()
        ch.close()
    # Everything the vanished clients started ends; the server is back where it was.
    deadline = time.monotonic() + 60     # generous: the machine may be busy
    while time.monotonic() < deadline:
        if proc.num_fds() <= fds0 and proc.num_threads() <= threads0 + 16:
            break
        time.sleep(0.5)

    def settled_fds():
        # A leak stays; a descriptor the server opens for a moment (its refresher
        # checking the files on disk, a decode) does not: the fewest over a second.
        seen = []
        for _ in range(10):
            seen.append(proc.num_fds())
            time.sleep(0.1)
        return min(seen), seen

    fds, seen = settled_fds()
    assert fds <= fds0, (fds0, seen)
    # gRPC's pool may have grown to MAX_WORKERS threads (16); nothing beyond that.
    assert proc.num_threads() <= threads0 + 16, (threads0, proc.num_threads())
    res = stub.GetSignalRange(messages.signal_request(str(big), ["c0"], T0, T0 + SEC),
                              metadata=metadata("keeper"), timeout=30)
    arr = [np.frombuffer(c.array_bytes, np.float32) for c in res]
    assert np.array_equal(np.concatenate(arr), direct_read(big, ["c0"], T0, T0 + SEC)[0])
    channel.close()
    assert server.stop() == 0, server.stderr_text()[-2000:]    # drains and exits cleanly
