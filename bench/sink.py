"""An SMTP sink for the benchmark: `python bench/sink.py PORT LOG` accepts every message and
appends one line per message to LOG: arrival time (epoch seconds), size in bytes, recipient."""

import signal
import sys
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, log: Any) -> None:
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        size = len(envelope.original_content)
        self.log.write(f"{time.time():.6f} {size} {envelope.rcpt_tos[0]}\n")
        self.log.flush()
        return "250 OK"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(path, "a") as log:
        controller = Controller(Recorder(log), hostname="127.0.0.1", port=port)
        controller.start()
        print("ready", flush=True)
        stop.wait()
        controller.stop()


if __name__ == "__main__":
    main()
