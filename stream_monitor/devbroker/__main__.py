"""Entry point for ``python -m stream_monitor.devbroker``."""

import sys

from stream_monitor.devbroker.broker import main

if __name__ == "__main__":
    sys.exit(main())
