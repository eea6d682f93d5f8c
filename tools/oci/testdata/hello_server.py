"""Stand-in app for the image rules: a tiny HTTP server (stdlib + pyyaml).

`hello_server --port N` serves GET /live -> {"status": "ok", "yaml": <pyyaml version>}.
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class Handler(BaseHTTPRequestHandler):
    """Answers /live with a small JSON document; 404 elsewhere."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path != "/live":
            self.send_error(404)
            return
        body = json.dumps({"status": "ok", "yaml": yaml.__version__}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
