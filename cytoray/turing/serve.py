"""`cytoray turing serve`: the reading page, a small Flask app on 127.0.0.1.

The app knows the served folder only: it never opens the key (it has no use for it), so no
response can carry it. It answers five routes and nothing else (no static folder, no listing):
the page, the reader's state, one image by its opaque id, an answer, and a favicon-free 404.
Only the image being read is ever sent; its neighbours are not prefetched. Each reader reads the
set in their own seeded order (order effects do not line up across readers) and their answers are
rewritten atomically to `answers/<reader>.json` after every answer, one entry per image, so a
reader who closes the browser (or whose server stops) resumes at their first unanswered image.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from ..errors import CytorayError
from ..io import safe_component, write_json
from . import ANSWERS, CONFIDENCE, IMAGES, SET_FILE, SOURCES
from .page import PAGE

# a reading page is for the person at this machine; never bound to other interfaces
HOST = "127.0.0.1"


def load_set(reading_dir: str | Path) -> dict:
    path = Path(reading_dir) / SET_FILE
    try:
        s = json.loads(path.read_text())
        missing = [
            i for i in s["images"] if not (Path(reading_dir) / IMAGES / f"{i}.png").is_file()
        ]
    except FileNotFoundError:
        raise CytorayError(
            f"{path}: not a reading set (no {SET_FILE}); make one with `cytoray turing build`"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CytorayError(
            f"{path}: not a cytoray reading set ({e}); rebuild it with `cytoray turing build`"
        ) from None
    if missing:
        raise CytorayError(
            f"{Path(reading_dir) / IMAGES}: {len(missing)} image(s) of "
            f"{SET_FILE} missing (e.g. {missing[0]}.png); rebuild the set"
        )
    return s


def reader_order(images: list[str], reader: str) -> list[str]:
    """The reader's own order: a permutation seeded by their name (stable across restarts)."""
    seed = int.from_bytes(hashlib.sha256(reader.encode()).digest()[:8], "big")
    return [images[i] for i in np.random.default_rng(seed).permutation(len(images))]


class Answers:
    """One reader's answers file, `answers/<reader>.json`: {"reader", "answers": [one entry per image]}."""

    def __init__(self, reading_dir: Path, reader: str) -> None:
        self.reader = safe_component(reader, "reader name")
        self.path = Path(reading_dir) / ANSWERS / f"{self.reader}.json"
        self.lock = threading.Lock()
        self.items: list[dict] = []
        if self.path.is_file():
            try:
                self.items = json.loads(self.path.read_text())["answers"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CytorayError(
                    f"{self.path}: unreadable answers file ({e}); "
                    "move it aside to start this reader again"
                ) from None

    def answered(self) -> set[str]:
        return {a["image"] for a in self.items}

    def record(self, answer: dict) -> None:
        """Keep one entry per image (a repeated post replaces it) and rewrite the file atomically."""
        with self.lock:
            self.items = [a for a in self.items if a["image"] != answer["image"]] + [answer]
            write_json(self.path, {"reader": self.reader, "answers": self.items})


def check_answer(body, images: set[str], classes: list[str]) -> dict:
    """The posted answer as stored, or ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("post a JSON object")
    image, source, cls, conf = (body.get(k) for k in ("image", "source", "class", "confidence"))
    if image not in images:
        raise ValueError("unknown image")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    if cls not in classes:
        raise ValueError(f"class must be one of {', '.join(classes)}")
    if conf not in CONFIDENCE:
        raise ValueError(f"confidence must be one of {CONFIDENCE}")
    seconds = body.get("seconds")
    return {
        "image": image,
        "source": source,
        "class": cls,
        "confidence": conf,
        "seconds": round(float(seconds), 2) if isinstance(seconds, (int, float)) else None,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def create_app(reading_dir: str | Path, reader: str):
    from flask import Flask, Response, abort, jsonify, request

    reading_dir = Path(reading_dir).resolve()
    s = load_set(reading_dir)
    store = Answers(reading_dir, reader)
    order, known, classes = (
        reader_order(s["images"], store.reader),
        set(s["images"]),
        list(s["classes"]),
    )
    app = Flask(__name__, static_folder=None)  # no static route: only what the routes below return

    def state() -> dict:
        done = store.answered()
        todo = [i for i in order if i not in done]
        nxt = {"image": todo[0], "position": len(order) - len(todo) + 1} if todo else None
        return {
            "reader": store.reader,
            "total": len(order),
            "answered": len(done & known),
            "next": nxt,
            "classes": classes,
            "sources": list(SOURCES),
            "confidence": list(CONFIDENCE),
            "size": s.get("size"),
        }

    @app.after_request
    def headers(resp):
        resp.headers["Cache-Control"] = "no-store"  # a shared machine's browser cache keeps nothing
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
        )
        return resp

    @app.get("/")
    def page():
        return Response(PAGE, mimetype="text/html")

    @app.get("/api/state")
    def get_state():
        return jsonify(state())

    @app.get("/image/<image_id>")
    def image(image_id: str):
        if image_id not in known:  # only ids of set.json: never a path
            abort(404)
        return Response(
            (reading_dir / IMAGES / f"{image_id}.png").read_bytes(), mimetype="image/png"
        )

    @app.post("/api/answer")
    def answer():
        try:
            store.record(check_answer(request.get_json(silent=True), known, classes))
        except ValueError as e:
            return jsonify({"error": str(e)}), 400
        return jsonify(state())

    return app


def make_server(reading_dir: str | Path, reader: str, port: int = 8765):
    """A threaded WSGI server on 127.0.0.1 (port 0: any free one); `.server_port`, `.serve_forever()`."""
    from werkzeug.serving import make_server as wz

    try:
        return wz(HOST, port, create_app(reading_dir, reader), threaded=True)
    except OSError as e:
        raise CytorayError(
            f"port {port} on {HOST}: {e.strerror or e}; pass another --port"
        ) from None


def serve_from_args(a) -> int:
    srv = make_server(a.dir, a.reader, a.port)
    print(
        f"reading set {Path(a.dir).resolve()} for reader '{a.reader}': open "
        f"http://{HOST}:{srv.server_port}/ (Ctrl-C stops; answers are saved as given)",
        flush=True,
    )
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0
