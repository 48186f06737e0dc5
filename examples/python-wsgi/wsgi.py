"""A WSGI app with one dependency (idna, from requirements.txt, installed into .venv)."""

import os

import idna


def application(environ, start_response):
    name = "bücher.example"
    body = (
        f"Hello from gearshift (python wsgi): app {os.environ.get('OPENSHIFT_APP_NAME', '?')}\n"
        f"idna {idna.__version__}: {name} -> {idna.encode(name).decode()}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
