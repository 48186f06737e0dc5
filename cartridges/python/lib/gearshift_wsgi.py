"""Loads the app's WSGI `application` from the file named by $GEARSHIFT_WSGI_FILE (wsgi.py or,
as in OpenShift v2, wsgi/application). Imported by gunicorn (gearshift_wsgi:application); run
as a script, serves it with a threaded server from the standard library on 0.0.0.0:$PORT."""

import importlib.machinery
import importlib.util
import os
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def _load(path):
    # The app's own directory first, then the repository (cwd), as mod_wsgi did in v2.
    for d in (os.getcwd(), os.path.dirname(os.path.abspath(path))):
        if d not in sys.path:
            sys.path.insert(0, d)
    loader = importlib.machinery.SourceFileLoader("wsgi_app", path)
    spec = importlib.util.spec_from_loader("wsgi_app", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["wsgi_app"] = module
    loader.exec_module(module)
    app = getattr(module, "application", None)
    if app is None:
        sys.exit(f"python: {path} defines no `application`")
    return app


application = _load(os.environ["GEARSHIFT_WSGI_FILE"])


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Handler(WSGIRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))


if __name__ == "__main__":
    host = "0.0.0.0"  # the gear IP for the router, loopback for checks inside the gear
    port = int(os.environ.get("PORT", "8080"))
    server = make_server(host, port, application, ThreadingWSGIServer, Handler)
    print(f"wsgi: serving {os.environ['GEARSHIFT_WSGI_FILE']} on http://{host}:{port}/", flush=True)
    server.serve_forever()
