"""Run in a decode worker (module-level, so a pool can pickle it by name).

:func:`die_mid_result` reproduces, on purpose, the wedge the soak with
SIGKILLs hit by chance: a worker killed while writing its result. It starts a
result message of 1 MiB on the pool's own result pipe, writes 64 bytes of
it and SIGKILLs itself, so the pool's manager thread blocks reading the rest.
"""
import os
import signal
import struct
import sys


def die_mid_result() -> None:
    frame = sys._getframe()
    while frame is not None and frame.f_code.co_name != "_process_worker":
        frame = frame.f_back
    assert frame is not None, "not running in a ProcessPoolExecutor worker"
    writer = frame.f_locals["result_queue"]._writer
    os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"\0" * 64)
    os.kill(os.getpid(), signal.SIGKILL)
