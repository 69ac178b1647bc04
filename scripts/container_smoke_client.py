"""The host side of scripts/container-smoke.sh (a file: mef3io cannot run from ``python -c``).

    container_smoke_client.py write PATH                   write a small recording at PATH
    container_smoke_client.py check ADDRESS CLIENT_PATH LOCAL_PATH
        open CLIENT_PATH through the server, read it all, compare with mef3io reading LOCAL_PATH,
        and check that a path outside DATA_ROOTS is refused
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

T0 = 1_600_000_000_000_000
CHANNELS = ["ch1", "ch2", "ch3"]


def write(path: str) -> None:
    import mef3io

    rng = np.random.default_rng(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(path, overwrite=True, units="uV") as w:
            for i, name in enumerate(CHANNELS):
                data = np.cumsum(rng.standard_normal(256 * 120)) * (i + 1)
                w.write(name, data, T0, fs=256.0, precision=2)
    print(f"wrote {path}")


def check(address: str, client_path: str, local_path: str) -> int:
    import mef3io

    from mef3io_server.client import Mef3Client

    with Mef3Client(address, timeout=60) as c:
        info = c.open_file(client_path)
        if not info["file_opened"]:
            print(f"FAIL: open {client_path}: {info['error_message']}")
            return 1
        t0, t1 = info["start_uutc"], info["end_uutc"]
        res = c.get_signal_range(client_path, CHANNELS, t0, t1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = mef3io.Reader(local_path, warn_declarations=False)
            ref = r.read(CHANNELS, t0, t1, dtype="float32")
            r.close()
        if res["array"] is None or not np.array_equal(res["array"], ref, equal_nan=True):
            print(f"FAIL: served data differs from mef3io's ({res['error_message']})")
            return 1
        print(f"read {res['shape']} samples through the container: identical to mef3io")
        outside = c.open_file("/etc/hostname.mefd")
        if outside["file_opened"] or "outside the served roots" not in outside["error_message"]:
            print(f"FAIL: a path outside DATA_ROOTS was not refused: {outside}")
            return 1
        print("a path outside DATA_ROOTS is refused")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write(sys.argv[2])
        sys.exit(0)
    if sys.argv[1:2] == ["check"]:
        sys.exit(check(*sys.argv[2:5]))
    print(__doc__)
    sys.exit(2)
