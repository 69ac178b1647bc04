"""Read 10 seconds of two channels of the demo recording from a running server.

Start the server first: ``bash scripts/serve-demo.sh``. Then:
``python examples/quickstart.py [ADDRESS]``.
"""
import sys

from mef3io_server.client import Mef3Client
from mef3io_server.demo import default_demo_dir

address = sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"
path = str(default_demo_dir() / "demo.mefd")

with Mef3Client(address) as client:
    info = client.open_file(path)
    if not info["file_opened"]:
        sys.exit(f"open failed: {info['error_message']}")
    t0 = info["start_uutc"]
    res = client.get_signal_range(path, ["Ch1", "Ch2"], t0, t0 + 10_000_000)
    print("channels:", info["number_of_channels"], "duration:", info["duration_s"], "s")
    print("shape:", res["shape"], "fs:", res["fs"])
    print("first samples of Ch1 (uV):", res["array"][0, :5])
    client.close_file(path)
