"""A WSGI app that keeps notes in a linked PostgreSQL add-on, through DATABASE_URL (psycopg).

GET /          lists the notes
GET /add?note=TEXT  adds one (committed before the answer)
"""

import os
import urllib.parse

import psycopg


def connect():
    return psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5)


def application(environ, start_response):
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    try:
        with connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
            if environ.get("PATH_INFO") == "/add":
                db.execute("INSERT INTO notes (body) VALUES (%s)", (query.get("note", [""])[0],))
            rows = db.execute("SELECT body FROM notes ORDER BY id").fetchall()
        status, body = "200 OK", "notes: " + ",".join(r[0] for r in rows) + "\n"
    except Exception as e:  # the page says what failed, for whoever deploys this
        status, body = "503 Service Unavailable", f"database error: {type(e).__name__}: {e}\n"
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
