"""The review web app (Starlette): server-rendered pages over one run folder; decisions saved at once.

Contract:

- ``create_app(run_dir, token=..., public=...)`` returns the ASGI app. Pages are rendered on the server by
  Jinja2 with autoescaping on (every class name, description, note and template is escaped) and work with
  JavaScript off: every action is a plain HTML form that POSTs and redirects back (303).
- Routes: ``GET /`` every class of the run by name with its status; ``GET /class?name=`` one waiting
  class (C_y, images with description, score and rounds, the ones CLIP rejected); ``GET /img/<path>`` an
  image of the run; ``POST /reject`` (``action=reject|undo``, optional ``note``), ``POST /template``,
  ``POST /approve``, ``POST /apply`` (starts ``python -m agent.run --out RUN --resume`` in the background,
  output in ``<run>/review-apply.log``).
- Safety: every POST carries the session's random ``token`` (a hidden field) and is refused (403) without
  it; ``public`` (a non-loopback ``--host``) also requires it on every GET (``?token=``, carried by every
  link); a loopback app accepts only loopback ``Host`` headers (DNS rebinding). ``/img/`` serves only image
  files under ``blobs/`` or ``images/`` of the run folder after resolving links: ``..`` or an absolute path
  is a 404. While an ``agent.run`` holds the folder's lock (agent/lifecycle/lock.py) every POST is refused
  (409): the folder is read-only to the app.
- A POST for a round the class has left (it was resumed meanwhile) is refused (409) rather than saved
  against the wrong images.
"""

from __future__ import annotations

import hmac
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from agent.lifecycle.folder import BLOBS, IMAGES, REVIEW_LOG
from agent.lifecycle.lock import holder
from agent.review.decisions import DecisionStore
from agent.review.waiting import ClassView, blob_relpath, review_view

__all__ = ["create_app", "safe_file"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def safe_file(run_dir: Path, relpath: str) -> Path | None:
    """The image ``relpath`` names inside ``run_dir/blobs`` or ``run_dir/images``, else ``None``.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "blobs").mkdir(); _ = (d / "blobs" / "a.png").write_bytes(b"x")
    >>> [safe_file(d, p) is not None for p in ("blobs/a.png", "../a.png", "/etc/passwd", "blobs/../config.json")]
    [True, False, False, False]
    """
    root = run_dir.resolve()
    if not relpath or relpath.startswith(("/", "\\")) or "\\" in relpath or "\x00" in relpath:
        return None
    try:
        path = (root / relpath).resolve(strict=True)  # follows links: a link out of the run is refused below
    except (OSError, RuntimeError):
        return None
    inside = any(path.is_relative_to(root / top) for top in (BLOBS, IMAGES))
    return path if inside and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES else None


def create_app(run_dir: Path, *, token: str, public: bool = False) -> Starlette:
    """The ASGI app over ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir).resolve()
    env = Environment(loader=PackageLoader("agent.review", "templates"), autoescape=True)
    state: dict[str, Any] = {"apply": None}

    def url(path: str, **query: Any) -> str:
        params = {**query, **({"token": token} if public else {})}
        return path + ("?" + urlencode(params) if params else "")

    def hidden(c: ClassView) -> Markup:
        round_ = c.payload["round"] if c.payload else 0
        return Markup(f'<input type="hidden" name="token" value="{escape(token)}">'
                      f'<input type="hidden" name="name" value="{escape(c.name)}">'
                      f'<input type="hidden" name="round" value="{int(round_)}">')

    def page(name: str, **values: Any) -> HTMLResponse:
        running = state["apply"] is not None and state["apply"].poll() is None
        locked = holder(run_dir) or ("applying decisions" if running else None)
        html = env.get_template(name).render(url=url, hidden=hidden, run_dir=str(run_dir), token=token,
                                             locked=locked, **values)
        return HTMLResponse(html)

    def check_get(request: Request) -> Response | None:
        if public and not hmac.compare_digest(request.query_params.get("token", ""), token):
            return PlainTextResponse("403: this review server needs the token from the URL it printed", 403)
        return None

    async def check_post(request: Request) -> tuple[dict[str, str], Response | None]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not hmac.compare_digest(form.get("token", ""), token):
            return form, PlainTextResponse("403: missing or wrong token; reload the page", 403)
        in_use = holder(run_dir) or (f"pid {state['apply'].pid}, started by Apply"
                                     if state["apply"] is not None and state["apply"].poll() is None else None)
        if in_use is not None:
            return form, PlainTextResponse(f"409: agent.run is using {run_dir} ({in_use}); the folder is read-only "
                                           "to the review app until it finishes", 409)
        return form, None

    def find(name: str) -> ClassView | None:
        return next((c for c in review_view(run_dir) if c.name == name), None)

    async def index(request: Request) -> Response:
        if (refused := check_get(request)) is not None:
            return refused
        classes = review_view(run_dir)
        log = run_dir / REVIEW_LOG
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]) if log.is_file() else ""
        return page("index.html", classes=classes, waiting=sum(c.waiting for c in classes), log=tail,
                    message=request.query_params.get("message"))

    async def class_page(request: Request) -> Response:
        if (refused := check_get(request)) is not None:
            return refused
        c = find(request.query_params.get("name", ""))
        if c is None or c.payload is None:
            return PlainTextResponse("404: no class of this name awaits review", 404)
        items = [_item_view(i, url) for i in c.payload["items"]]
        return page("class.html", c=c, p=c.payload, rejected_now=c.rejected_indices(),
                    accepted=[i for i in items if i["status"] == "accepted"],
                    dropped=[i for i in items if i["status"] != "accepted"], message=None)

    async def image(request: Request) -> Response:
        if (refused := check_get(request)) is not None:
            return refused
        path = safe_file(run_dir, request.path_params["path"])
        if path is None:
            return PlainTextResponse("404: no such image in this run", 404)
        return FileResponse(path)

    async def decide(request: Request) -> Response:
        form, refused = await check_post(request)
        if refused is not None:
            return refused
        c = find(form.get("name", ""))
        if c is None or c.payload is None:
            return PlainTextResponse("404: no class of this name awaits review", 404)
        round_ = int(c.payload["round"])
        if form.get("round") != str(round_):
            return PlainTextResponse("409: this class has moved to another review round; reload the page", 409)
        store = DecisionStore(run_dir)
        try:
            kind = request.url.path
            if kind == "/reject":
                text = form.get("item", "")
                item = int(text) if text.isdigit() else -1
                if item not in {int(i["index"]) for i in c.payload["items"]}:
                    return PlainTextResponse("404: no such image in this class", 404)
                if form.get("action") == "undo":
                    store.unreject(c.name, round_, item)
                else:
                    store.reject(c.name, round_, item, form.get("note", "")[:500])
            elif kind == "/template":
                store.set_class(c.name, round_, template=form.get("template", "").strip()[:2000] or None)
            else:
                store.set_class(c.name, round_, approved=form.get("approve") == "1")
        finally:
            store.close()
        return RedirectResponse(url("/class", name=c.name), status_code=303)

    async def apply(request: Request) -> Response:
        _, refused = await check_post(request)
        if refused is not None:
            return refused
        if state["apply"] is not None and state["apply"].poll() is None:
            return RedirectResponse(url("/", message="decisions are being applied"), status_code=303)
        log = (run_dir / REVIEW_LOG).open("wb")
        state["apply"] = subprocess.Popen([sys.executable, "-m", "agent.run", "--out", str(run_dir), "--resume"],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return RedirectResponse(url("/", message="applying decisions: reload to follow"), status_code=303)

    routes = [Route("/", index), Route("/class", class_page), Route("/img/{path:path}", image),
              *(Route(p, decide, methods=["POST"]) for p in ("/reject", "/template", "/approve")),
              Route("/apply", apply, methods=["POST"])]
    middleware = [] if public else [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)]
    return Starlette(routes=routes, middleware=middleware)


def _item_view(item: dict[str, Any], url: Any) -> dict[str, Any]:
    rel = blob_relpath(item.get("sha256"), item.get("ext"))
    score = item.get("score")
    return {**item, "src": url(f"/img/{rel}") if rel else None,
            "score_text": f"{score:.3f}" if isinstance(score, (int, float)) else "—"}
