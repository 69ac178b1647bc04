"""The HTTP side (HTTP_PORT) end to end: a real server process, real HTTP requests.

What it answers is compared with mef3io read directly (samples, exactly, NaN
for NaN), with the block index read directly (envelopes) and with the same
server's gRPC answers (n_points, records); errors, tokens, TLS, metrics, the
call log and the settings are checked as a client and an operator meet them.
"""
from __future__ import annotations

import json
import re
import ssl
import struct
import urllib.error
import urllib.parse
import urllib.request
import warnings

import mef3io
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, start_with_tokens, write_session
from test_tls import pki  # noqa: F401 - the fixture

from mef3io_server.server.config import ConfigError, load_settings

CHANNELS = [f"E{i}" for i in range(6)]


def viewer_url(handle) -> str:
    """The base URL of the server's HTTP side, from its start-up line."""
    m = re.search(r"web viewer at (https?://\S+?:\d+/)", handle.stderr_text())
    assert m, handle.stderr_text()
    return m.group(1)


def get(url: str, *, token: str = "", data=None, context=None, client_id: str = "t"):
    """(status, headers, body bytes) of one request; errors are answers too."""
    headers = {"X-Mef3io-Client-Id": client_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if data is not None:
        data = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def parse_frame(body: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<I", body)
    assert (4 + n) % 8 == 0
    return json.loads(body[4:4 + n]), body[4 + n:]


def signal_url(base, path, channels, t0, t1, n_points=None, montage="", filter="") -> str:
    q = [("path", str(path))] + [("ch", c) for c in channels] + [("t0", t0), ("t1", t1)]
    if n_points:
        q.append(("n_points", n_points))
    q += [(k, v) for k, v in (("montage", montage), ("filter", filter)) if v]
    return base + "api/signal?" + urllib.parse.urlencode(q)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("http_data")
    x = {c: random_walk(256 * 120, i) for i, c in enumerate(CHANNELS)}
    x["E0"][256 * 30:256 * 40] = np.nan            # a 10 s gap in E0
    path = write_session(root / "rec.mefd", x)
    enc = write_session(root / "locked.mefd", {"a": random_walk(2560, 9)},
                        password1="pw1", password2="pw2")
    outside = write_session(tmp_path_factory.mktemp("elsewhere") / "out.mefd",
                            {"a": random_walk(2560, 3)})
    return {"root": root, "path": path, "enc": enc, "outside": outside}


@pytest.fixture(scope="module")
def server(data):
    from conftest import launch_server

    h = launch_server({"HTTP_PORT": "0", "DATA_ROOTS": str(data["root"]),
                       "BIND_ADDRESS": "127.0.0.1", "METRICS_PORT": "0"})
    yield h
    h.stop()


def test_samples_travel_as_float32_equal_to_mef3io(server, data):
    base = viewer_url(server)
    status, _, body = get(base + "api/open", data={"path": str(data["path"])})
    assert status == 200, body
    info = json.loads(body)
    assert info["channels"] == CHANNELS and info["start_uutc"] == T0
    t0, t1 = T0 + 25_000_000, T0 + 45_000_000           # across E0's gap
    status, headers, body = get(signal_url(base, data["path"], ["E0", "E3"], t0, t1))
    assert status == 200 and headers["content-type"] == "application/x-mef3io-frame"
    header, payload = parse_frame(body)
    assert header["channels"] == ["E0", "E3"] and header["fs"] == 256.0
    got = np.frombuffer(payload, "<f4").reshape(header["n"], 2).T
    want = direct_read(data["path"], ["E0", "E3"], t0, t1)
    np.testing.assert_array_equal(got, want)                # NaN for NaN
    assert np.isnan(got[0]).sum() == 2560 and not np.isnan(got[1]).any()
    assert int(headers["content-length"]) == len(body)


def test_n_points_answers_equal_the_grpc_answers(server, data, client_factory):
    base = viewer_url(server)
    get(base + "api/open", data={"path": str(data["path"])}, client_id="pts")
    t0, t1 = T0, T0 + 120_000_000
    _, _, body = get(signal_url(base, data["path"], CHANNELS, t0, t1, n_points=500),
                     client_id="pts")
    header, payload = parse_frame(body)
    assert header["n"] == 500
    got = np.frombuffer(payload, "<f4").reshape(500, len(CHANNELS)).T
    c = client_factory(server.address)
    c.open_file(str(data["path"]))
    want = c.get_signal_range(str(data["path"]), CHANNELS, t0, t1, n_points=500)["array"]
    np.testing.assert_array_equal(got, want)


def test_montages_and_filters_equal_the_grpc_reads_with_the_same_ones(server, data,
                                                                      client_factory):
    from mef3io_server.montages import average_reference, bandpass, bipolar, notch

    base = viewer_url(server)
    status, _, body = get(base + "api/server")
    offers = json.loads(body)
    assert [m["name"] for m in offers["montages"]] == ["average", "bipolar"]
    assert [f["name"] for f in offers["filters"]] == ["0.5-70Hz", "0.5-70Hz-notch50",
                                                      "0.5-70Hz-notch60"]
    get(base + "api/open", data={"path": str(data["path"])}, client_id="mtg")
    c = client_factory(server.address)
    c.open_file(str(data["path"]))
    path = str(data["path"])
    # E* are no 10-20 names: the bipolar montage pairs neighbours in the order asked.
    pairs = [("E0", "E1"), ("E1", "E2"), ("E2", "E3"), ("E3", "E4"), ("E4", "E5")]
    cases = [  # (montage, filter, gRPC montage, gRPC filters)
        ("bipolar", "0.5-70Hz", bipolar(pairs), [bandpass(0.5, 70)]),
        ("average", "0.5-70Hz-notch50", average_reference(CHANNELS),
         [bandpass(0.5, 70), notch(50)]),
        ("", "0.5-70Hz-notch60", None, [bandpass(0.5, 70), notch(60)]),
        ("bipolar", "", bipolar(pairs), None),
    ]
    for window, n_points in (((T0 + 25_000_000, T0 + 45_000_000), None),   # across E0's gap
                             ((T0, T0 + 120_000_000), 400)):               # an overview
        for montage, filt, grpc_montage, grpc_filters in cases:
            status, _, body = get(signal_url(base, path, CHANNELS, *window, n_points=n_points,
                                             montage=montage, filter=filt), client_id="mtg")
            assert status == 200, body
            header, payload = parse_frame(body)
            want = c.get_signal_range(path, None if grpc_montage else CHANNELS, *window,
                                      n_points=n_points, montage=grpc_montage,
                                      filters=grpc_filters)
            assert header["channels"] == want["channel_names"]
            got = np.frombuffer(payload, "<f4").reshape(header["n"], -1).T
            np.testing.assert_array_equal(got, want["array"])       # exactly, NaN for NaN
            assert header["fs"] == want["fs"]
            assert header["start_uutc"] == want["start_uutc"]
    assert header["channels"][0] == "E0-E1"
    # The filter changes the samples; the montage names the derived channels.
    _, _, raw = get(signal_url(base, path, ["E1"], T0, T0 + 10**7), client_id="mtg")
    _, _, filt = get(signal_url(base, path, ["E1"], T0, T0 + 10**7, filter="0.5-70Hz"),
                     client_id="mtg")
    assert parse_frame(raw)[1] != parse_frame(filt)[1]
    _, _, avg = get(signal_url(base, path, ["E1", "E2"], T0, T0 + 10**7, montage="average"),
                    client_id="mtg")
    assert parse_frame(avg)[0]["channels"] == ["E1-avg", "E2-avg"]


def test_envelope_frame_is_the_block_index(server, data):
    base = viewer_url(server)
    get(base + "api/open", data={"path": str(data["path"])})
    q = urllib.parse.urlencode([("path", str(data["path"])), ("ch", "E1"), ("ch", "E2")])
    status, _, body = get(base + "api/envelope?" + q)
    assert status == 200
    header, payload = parse_frame(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(data["path"]))
        try:
            want = {c: r.block_envelope(c) for c in ("E1", "E2")}
        finally:
            r.close()
    off = 0
    for ch in header["channels"]:
        n = ch["n"]
        e = want[ch["name"]]
        assert n == len(e["min"]) > 0
        for key, dt in (("start_uutc", "<f8"), ("end_uutc", "<f8"), ("min", "<f4"),
                        ("max", "<f4")):
            arr = np.frombuffer(payload, dt, n, off)
            off += arr.nbytes + (-arr.nbytes % 8)
            np.testing.assert_array_equal(arr, np.asarray(e[key], dtype=dt))
    assert off == len(payload)


def test_records_segments_and_listing(server, data, client_factory):
    base = viewer_url(server)
    get(base + "api/open", data={"path": str(data["path"])})
    q = urllib.parse.urlencode({"path": str(data["path"])})
    status, _, body = get(base + "api/segments?" + q)
    runs = json.loads(body)["channels"]["E0"]["runs"]
    assert runs == [[T0, T0 + 30_000_000], [T0 + 40_000_000, T0 + 120_000_000]]
    status, _, body = get(base + "api/records?" + q)
    c = client_factory(server.address)
    c.open_file(str(data["path"]))
    assert status == 200
    assert len(json.loads(body)["records"]) == len(c.get_records(str(data["path"])))
    status, _, body = get(base + "api/recordings")
    listed = {r["path"] for r in json.loads(body)["recordings"]}
    assert listed == {str(data["path"]), str(data["enc"])}


def test_bad_requests_are_named_and_the_server_keeps_serving(server, data):
    base = viewer_url(server)
    get(base + "api/open", data={"path": str(data["path"])})
    cases = [
        (signal_url(base, data["path"], ["E0"], T0 + 10, T0), 400, "inverted"),
        (base + f"api/signal?path={data['path']}&ch=E0&t0=x&t1=1", 400, "whole number"),
        (signal_url(base, data["path"], ["nope"], T0, T0 + 10**6), 400, "nope"),
        (signal_url(base, data["path"], ["E0"], T0, T0 + 10**6, n_points=10**6), 400,
         "n_points"),
        (signal_url(base, data["path"], ["E0"], T0, T0 + 10**6, montage="laplacian"), 400,
         "unknown montage 'laplacian'"),
        (signal_url(base, data["path"], ["E0"], T0, T0 + 10**6, filter="1-30Hz"), 400,
         "unknown filter '1-30Hz'"),
        (signal_url(base, data["path"], ["E0"], T0, T0 + 10**6, montage="bipolar"), 400,
         "at least two channels"),
    ]
    for url, status, words in cases:
        got, _, body = get(url)
        assert got == status, body
        assert words in json.loads(body)["error"]
    status, _, body = get(base + "api/open", data={"path": str(data["outside"])})
    assert status == 403 and json.loads(body)["problem"] == "path"
    status, _, body = get(base + "api/open", data={"path": str(data["root"] / "none.mefd")})
    assert status == 404
    status, _, body = get(base + "api/open", data={"path": str(data["enc"])})
    assert status == 403 and json.loads(body)["problem"] == "password"
    status, _, body = get(base + "api/open", data={"path": str(data["enc"]), "password": "no"})
    assert status == 403 and json.loads(body)["problem"] == "password"
    status, _, body = get(base + "api/open", data={"path": str(data["enc"]), "password": "pw2"},
                          client_id="enc")
    assert status == 200 and json.loads(body)["encrypted"]
    status, _, body = get(signal_url(base, data["enc"], ["a"], T0, T0 + 10**7), client_id="enc")
    header, payload = parse_frame(body)
    np.testing.assert_array_equal(np.frombuffer(payload, "<f4"),
                                  direct_read(data["enc"], ["a"], T0, T0 + 10**7, "pw2")[0])
    assert get(signal_url(base, data["path"], ["E1"], T0, T0 + 10**6))[0] == 200


def test_http_calls_are_logged_and_counted(server, data):
    base = viewer_url(server)
    get(base + "api/open", data={"path": str(data["path"])}, client_id="logged")
    get(signal_url(base, data["path"], ["E1", "E2"], T0 + 5_000_000, T0 + 6_000_000),
        client_id="logged")
    line = f"http_signal client=logged file={data['path']} window=[{T0 + 5_000_000}, " \
           f"{T0 + 6_000_000}) channels=2 bytes={2 * 256 * 4}"
    import time

    for _ in range(50):
        if line in server.stderr_text():
            break
        time.sleep(0.1)
    assert line in server.stderr_text()
    m = re.search(r"metrics served at /metrics on port (\d+)", server.stderr_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics") as r:
        text = r.read().decode()
    assert re.search(r'mef3io_server_requests_total\{outcome="ok",rpc="http_signal"\} [1-9]',
                     text), text


def test_tokens_are_required_on_the_http_side(start_server, tmp_path, data):
    h = start_with_tokens(start_server, tmp_path, "alice s3cret\n", HTTP_PORT="0",
                          DATA_ROOTS=str(data["root"]))
    base = viewer_url(h)
    status, _, body = get(base + "api/server")            # says a token is needed
    assert status == 200 and json.loads(body)["auth"] is True
    for token, words in (("", "requires a bearer token"), ("wrong", "not accepted")):
        status, _, body = get(base + "api/open", data={"path": str(data["path"])}, token=token)
        assert status == 401 and json.loads(body)["problem"] == "token"
        assert words in json.loads(body)["error"]
    status, _, _ = get(base + "api/open", data={"path": str(data["path"])}, token="s3cret")
    assert status == 200
    status, _, _ = get(signal_url(base, data["path"], ["E1"], T0, T0 + 10**6), token="s3cret")
    assert status == 200
    assert get(base)[0] == 200          # the page itself: it asks for the token


def test_https_with_the_servers_certificate(start_server, pki, data):  # noqa: F811
    h = start_server(HTTP_PORT="0", TLS_CERT_FILE=pki["server.pem"],
                     TLS_KEY_FILE=pki["server.key"], DATA_ROOTS=str(data["root"]))
    base = viewer_url(h)
    assert base.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    status, _, body = get(base + "api/open", data={"path": str(data["path"])}, context=ctx)
    assert status == 200, body
    with pytest.raises(OSError):         # plain HTTP is not answered
        get(base.replace("https://", "http://") + "api/server")


def test_off_unless_set_and_settings_checked(start_server, data):
    h = start_server(DATA_ROOTS=str(data["root"]))
    assert "web viewer" not in h.stderr_text()
    assert load_settings({"HTTP_PORT": "8080"}).http_port == 8080
    assert load_settings({}).http_port is None
    for env, var in (({"HTTP_PORT": "http"}, "HTTP_PORT"), ({"HTTP_PORT": "70000"}, "HTTP_PORT"),
                     ({"HTTP_PORT": "50051"}, "HTTP_PORT"),
                     ({"HTTP_BIND_ADDRESS": "a.b"}, "HTTP_BIND_ADDRESS")):
        with pytest.raises(ConfigError, match=var):
            load_settings(env)


def test_a_taken_http_port_stops_start_up_naming_it(start_server, data):
    import socket

    from conftest import launch_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        h = launch_server({"HTTP_PORT": str(port), "BIND_ADDRESS": "127.0.0.1"},
                          expect_port=False)
        assert h.proc.wait(60) != 0
    assert "HTTP_PORT" in h.stderr_text()


def test_a_server_on_this_machine_only_answers_localhost_names_only(server):
    """A page elsewhere cannot reach it through DNS rebinding (its Host is not ours)."""
    base = viewer_url(server)
    port = urllib.parse.urlsplit(base).port
    for host, status in ((f"localhost:{port}", 200), (f"127.0.0.1:{port}", 200),
                         (f"[::1]:{port}", 200), (f"rebound.example:{port}", 421),
                         ("", 421)):
        req = urllib.request.Request(base + "api/server", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == status, host


def test_the_page_and_its_assets_come_from_the_server_only(server):
    base = viewer_url(server)
    status, headers, body = get(base)
    assert status == 200 and b'<canvas id="traces">' in body
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert not re.search(rb"(src|href)=\"(https?:)?//", body)        # nothing from elsewhere
    for asset in re.findall(rb'(?:src|href)="(assets/[^"]+)"', body):
        assert get(base + asset.decode())[0] == 200
