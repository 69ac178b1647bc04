"""Read 10 seconds of two channels of the demo recording from a running server.

Start the server first: ``bash scripts/serve-demo.sh``. Then, with the
environment it made (``source .venv/bin/activate``):
``python examples/quickstart.py [ADDRESS]`` (default: ``$MEF3IO_ADDRESS``,
else ``localhost:50051``).
"""
import sys

from mef3io_server.client import Mef3Client, Mef3Error
from mef3io_server.demo import demo_path

address = sys.argv[1] if len(sys.argv) > 1 else None
path = str(demo_path())

try:
    with Mef3Client(address, raise_errors=True) as client:
        info = client.open_file(path)
        res = client.get_signal_range(path, ["Ch1", "Ch2"], "+10m", "+10m10s")
        print("channels:", info["number_of_channels"], "duration:", info["duration_s"], "s")
        print("shape:", res["shape"], "fs:", res["fs"])
        print("first samples of Ch1 (uV):", res["array"][0, :5])
        client.close_file(path)
except Mef3Error as e:       # not running, wrong address, no demo there, ...
    sys.exit(f"quickstart: {e}")
