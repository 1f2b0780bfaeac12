"""The strict moto server (moto_fixtures) in its own process, with its request counters over HTTP.

    python -m bench.moto_proc [LIFETIME]

Prints {"endpoint_url", "control_url"} when ready. GET control_url/counts returns the
per-operation request counts; POST control_url/reset-counts zeroes them. Exits after
LIFETIME seconds or on SIGTERM.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto_fixtures.server import start


def main(lifetime: float) -> None:
    server = start("127.0.0.1", 0)

    class Control(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(dict(server.counts)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            server.counts.clear()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(json.dumps({"endpoint_url": server.endpoint_url,
                      "control_url": f"http://127.0.0.1:{control.server_address[1]}"}), flush=True)
    time.sleep(lifetime)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1800.0)
