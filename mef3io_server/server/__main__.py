"""``python -m mef3io_server.server``: run the server, configured from the environment."""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
