"""A WSGI app that keeps notes in a linked MariaDB add-on, through DATABASE_URL (mysql://, PyMySQL).

GET /               lists the notes
GET /add?note=TEXT  adds one (committed before the answer)
"""

import os
import urllib.parse

import pymysql


def connect():
    u = urllib.parse.urlparse(os.environ["DATABASE_URL"])
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=urllib.parse.unquote(u.username or ""),
        password=urllib.parse.unquote(u.password or ""),
        database=u.path.lstrip("/"),
        connect_timeout=10,
    )


def application(environ, start_response):
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    try:
        db = connect()
        try:
            with db.cursor() as c:
                c.execute("CREATE TABLE IF NOT EXISTS notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT NOT NULL)")
                if environ.get("PATH_INFO") == "/add":
                    c.execute("INSERT INTO notes (body) VALUES (%s)", (query.get("note", [""])[0],))
                db.commit()
                c.execute("SELECT body FROM notes ORDER BY id")
                rows = c.fetchall()
        finally:
            db.close()
        status, body = "200 OK", "notes: " + ",".join(r[0] for r in rows) + "\n"
    except Exception as e:  # the page says what failed, for whoever deploys this
        status, body = "503 Service Unavailable", f"database error: {type(e).__name__}: {e}\n"
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
