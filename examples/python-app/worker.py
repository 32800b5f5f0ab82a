"""A background worker for the example app: prints a heartbeat every second.

Exits cleanly (status 0) on SIGTERM or SIGINT, finishing the current beat first.
"""

import os
import signal
import sys
import time

running = True


def _stop(signum, _frame):
    global running
    running = False
    print(f"worker: got {signal.Signals(signum).name}, stopping", flush=True)


def main():
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    release = os.environ.get("RELEASE") or os.environ.get("BERTH_RELEASE_ID") or "unknown"
    beat = 0
    print(f"worker: started (pid {os.getpid()}, release {release})", flush=True)
    while running:
        beat += 1
        print(f"worker: heartbeat {beat}", flush=True)
        # Sleep in short steps so a stop signal is acted on promptly.
        deadline = time.monotonic() + 1.0
        while running and time.monotonic() < deadline:
            time.sleep(0.05)
    print("worker: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
