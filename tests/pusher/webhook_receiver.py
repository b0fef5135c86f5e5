"""A site's webhook endpoint for the Pusher suite: Python's own HTTP server
on a loopback port the kernel picks (written to argv[1] once listening),
appending every request cometbox POSTs, headers and raw body, as one JSON
line to argv[2], and answering 200. The SDK tests then validate those
requests with the official SDKs' webhook helpers. run-tests.sh starts it
before the server (whose pusher.webhook_url points here) and stops it by
its pid."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port_file, log_file = sys.argv[1], sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        line = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402  (the rename makes the port file appear whole)

os.rename(port_file + ".tmp", port_file)
server.serve_forever()
