"""``python -m agent.review RUN [--host H] [--port P]`` (console ``ltgc-review``): serve the review app.

Contract: ``main(argv) -> int``. A ``RUN`` that is not a run folder is one line on stderr and exit 2. The
app binds 127.0.0.1 unless ``--host`` says otherwise; a non-loopback host gets a random token, printed once
as part of the URL (every request must carry it). The URL it serves is printed on stdout, flushed, before
requests are taken (``--port 0`` picks a free port and prints it). Ctrl-C stops it: every decision is
already saved (agent/review/decisions.py).
"""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import entry_point
from agent.lifecycle.folder import CONFIG
from agent.providers.endpoints import is_loopback
from store.cli import OneLineParser
from store.errors import UsageError

__all__ = ["is_loopback", "main"]


class ReviewError(UsageError):
    """Bad input to agent.review (one line)."""


@entry_point  # ReviewError, an unreadable config.json: one line, exit 2 (agent/errors.py)
def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python -m agent.review", description="Review a --review run in the browser: reject "
                      "images, edit C_y, approve classes; then apply with the page's button or agent.run --resume.")
    p.add_argument("run", help="the run folder (agent.run --out) whose classes await review")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need the token)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    args = p.parse_args(argv)
    run_dir = Path(args.run).expanduser().resolve()
    if not (run_dir / CONFIG).is_file():
        raise ReviewError(f"{args.run}: not a run folder (no config.json); give the --out folder of an agent.run")
    if not 0 <= args.port <= 65535:
        raise ReviewError(f"--port {args.port}: must be from 0 to 65535")
    sock = _bind(args.host, args.port)
    import uvicorn  # after the checks: a bad argument is instant

    import agent.graph.graph  # noqa: F401  (LangGraph loads now, not during the first page view)
    from agent.review.app import create_app

    public = not is_loopback(args.host)
    token = secrets.token_urlsafe(24)
    app = create_app(run_dir, token=token, public=public)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"reviewing {run_dir} at http://{shown}:{port}/" + (f"?token={token}" if public else ""), flush=True)
    if public:
        print("warning: listening beyond this machine; anyone with the URL above can review this run", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that ``--port 0`` can print the port it got."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until uvicorn serves: the printed URL works at once
    except OSError as exc:
        raise ReviewError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                          "pick another --port (0 = any free one)") from None
    return sock
