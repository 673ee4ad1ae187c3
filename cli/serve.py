"""`leukedge serve`: the HTTP API of runtime/http_api.py on uvicorn, for local lab software.

Binds 127.0.0.1 unless --host says otherwise (then it warns: there is no authentication). The
port is bound before the model is loaded, so a port in use is exit 2 before "Serving", and
uvicorn is handed that socket (no window in which another process could take it). Needs the
``[serve]`` extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Annotated, List, Optional

import typer

from .errors import EXIT_OK, fail, need
from .options import ModelOption, Provider, ProviderOption, ReviewBelowOption, ThreadsOption

HELP = """Serve the model over HTTP for local software (LIMS, viewers): GET /healthz,
GET /v1/model, POST /v1/classify (multipart field 'file'; several allowed).

Errors are JSON {"error": "message"}; 413 above --max-upload-mb. Binds 127.0.0.1 by
default: there is no authentication, so only expose it on a network you trust. Requests
whose Host is not a name of this server (see --allow-host) and POSTs from web pages
(a foreign Origin) are refused."""


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    model: ModelOption = None,
    provider: ProviderOption = Provider.auto,
    threads: ThreadsOption = None,
    review_below: ReviewBelowOption = None,
    max_upload_mb: Annotated[float, typer.Option(
        min=0.01, help="Largest accepted request body, MiB.")] = 20.0,
    batch_window_ms: Annotated[float, typer.Option(
        min=0.0, help="Wait this long for more requests to share a model run. 0: no wait; "
                      "requests that queued up during the last run still share the next one "
                      "(measured best: docs/RESULTS.md).")
    ] = 0.0,
    allow_host: Annotated[Optional[List[str]], typer.Option(
        metavar="NAME", show_default=False, help="Another name clients use for this server in the Host "
                                 "header (e.g. lab-pc.local); repeatable. Loopback names and "
                                 "--host are always accepted.")] = None,
) -> None:
    """Serve the model over HTTP (see HELP)."""
    need("fastapi", "serve", "leukedge serve")
    need("uvicorn", "serve", "leukedge serve")
    import uvicorn

    from leukedge.runtime.http_api import create_app, loopback

    from .classifier import open_classifier

    if not loopback(host):
        typer.echo(f"Warning: binding {host}: anyone who can reach this address can use the "
                   "model; leukedge serve has no authentication.", err=True)
    sock = bind_socket(host, port)
    classifier = open_classifier(model, provider.value, threads, review_below)
    app = create_app(classifier, int(max_upload_mb * 2**20), batch_window_ms, host=host,
                     port=port, allowed_hosts=allow_host or ())
    for name in ("multipart", "python_multipart"):  # a malformed upload is the client's problem
        logging.getLogger(name).setLevel(logging.ERROR)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    typer.echo(f"Serving {classifier.model_path.name} on http://{_url_host(host)}:{port}",
               err=True)
    uvicorn.Server(config).run(sockets=[sock])
    raise typer.Exit(EXIT_OK)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, or exit 2 saying why (in use, not allowed, unknown
    address). Not listening yet: uvicorn listens on it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        fail(f"--host {host}: not an address of this machine ({e})")
    sock = socket.socket(family, kind, proto)
    if os.name != "nt":  # POSIX: rebind at once after a restart; Windows: this would share it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            fail(f"port {port} on {host} is in use (another leukedge serve, or another "
                 "program); stop it or choose another --port")
        fail(f"cannot listen on {host} port {port} ({e.strerror or e}); choose another "
             "--port or --host")
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def register(app: typer.Typer) -> None:
    """Adds `leukedge serve` to the app."""
    app.command("serve", help=HELP, short_help="Serve the model over HTTP (127.0.0.1).")(serve)
