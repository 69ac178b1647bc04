"""Run as a script by test_decode.py: a process decoder whose workers start slowly.

``python slow_start_decoder.py RECORDING T0``: warms a ``ProcessDecoder`` up,
decodes one window, closes it and prints ``ok <shape>``; the test checks that
this process then exits (a worker left behind made Python wait for it at exit
for ever). Run it with a ``sitecustomize`` that delays the forkserver's start
(see ``test_decode.slow_forkserver``). A file, not ``python -c``: the forkserver
imports the main module by path.
"""
import sys

from mef3io_server.server.decode import ProcessDecoder, Source


def main() -> None:
    path, t0 = sys.argv[1], int(sys.argv[2])
    dec = ProcessDecoder(1, 1)
    try:
        dec.warm_up()
        out = dec.submit(Source(path, 1), ["c0", "c1", "c2"], t0, t0 + 300_000_000).result(120)
        print("ok", out.shape, "wedged", dec.wedged, flush=True)
    finally:
        dec.close()


if __name__ == "__main__":
    main()
