"""A tiny WSGI app for trying berth out; standard library only.

Routes:
  /health       200 "ok"
  /             "hello from berth"
  /version      the release: $RELEASE, else $BERTH_RELEASE_ID, else "unknown"
  /slow?ms=N    sleeps N milliseconds, then answers (for testing graceful stops)
  /crash        ends the worker process at once with exit status 3

Run it under gunicorn (`gunicorn app:app`) or, without gunicorn, with `python3 app.py`, which
serves it with wsgiref on $PORT (default 8000).
"""

import os
import time
from urllib.parse import parse_qs

MAX_SLEEP_MS = 10 * 60 * 1000


def _respond(start_response, status, body):
    data = body.encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
        ],
    )
    return [data]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        return _respond(start_response, "200 OK", "ok\n")
    if path == "/":
        return _respond(start_response, "200 OK", "hello from berth\n")
    if path == "/version":
        release = os.environ.get("RELEASE") or os.environ.get("BERTH_RELEASE_ID") or "unknown"
        return _respond(start_response, "200 OK", release + "\n")
    if path == "/slow":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            ms = int(query.get("ms", ["1000"])[0])
        except ValueError:
            return _respond(start_response, "400 Bad Request", "ms must be a whole number\n")
        if ms < 0 or ms > MAX_SLEEP_MS:
            return _respond(
                start_response, "400 Bad Request", f"ms must be between 0 and {MAX_SLEEP_MS}\n"
            )
        time.sleep(ms / 1000)
        return _respond(start_response, "200 OK", f"slept {ms}ms\n")
    if path == "/crash":
        # Skips cleanup on purpose: the worker dies as if it had crashed.
        os._exit(3)
    return _respond(start_response, "404 Not Found", "not found\n")


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(os.environ.get("PORT", "8000"))
    with make_server("127.0.0.1", port, app) as server:
        print(f"serving on 127.0.0.1:{port}", flush=True)
        server.serve_forever()
