"""The diy example's server, started in the background by .openshift/action_hooks/start."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"Hello from gearshift (diy): app {os.environ.get('OPENSHIFT_APP_NAME', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ip = os.environ.get("OPENSHIFT_DIY_IP") or "0.0.0.0"
port = int(os.environ.get("OPENSHIFT_DIY_PORT") or os.environ.get("PORT", "8080"))
print(f"listening on {ip}:{port}", flush=True)
ThreadingHTTPServer((ip, port), Hello).serve_forever()
