"""A Flask app written the Heroku way: `web: gunicorn app:app` in the Procfile, Flask and
gunicorn in requirements.txt. gunicorn binds 0.0.0.0:$PORT by itself when $PORT is set."""

import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return (
        "Hello from gearshift (flask on gunicorn)\n"
        f"cwd: {os.getcwd()}\n"
        f"/app is this deployment: {os.path.realpath('/app') == os.path.realpath(os.getcwd())}\n"
    )
