"""The Procfile example: `web: python3 -u server.py`, listening on $PORT. It also shows the
order the deploy ran the action hooks in ($OPENSHIFT_DATA_DIR/hooks.log)."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = os.path.join(os.environ.get("OPENSHIFT_DATA_DIR", "."), "hooks.log")


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with open(LOG) as f:
                hooks = " ".join(f.read().split())
        except OSError:
            hooks = "(none)"
        body = f"Hello from gearshift (procfile): app {os.environ.get('OPENSHIFT_APP_NAME', '?')}\nhooks: {hooks}\n"
        body = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


port = int(os.environ["PORT"])
print(f"listening on 0.0.0.0:{port}", flush=True)
ThreadingHTTPServer(("0.0.0.0", port), Hello).serve_forever()
