"""`leukedge serve`: the HTTP API of runtime/http_api.py on uvicorn, for local lab software,
and with ``--review`` the review page (runtime/review_http.py).

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
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .errors import EXIT_OK, fail, need, reported
from .options import ModelOption, Provider, ProviderOption, ReviewBelowOption, ThreadsOption
from .output import display_path

HELP = """Serve the model over HTTP for local software (LIMS, viewers): GET /healthz,
GET /v1/model, POST /v1/classify (multipart field 'file'; several allowed).

Errors are JSON {"error": "message"}; 413 above --max-upload-mb. Binds 127.0.0.1 by
default: there is no authentication, so only expose it on a network you trust. Requests
whose Host is not a name of this server (see --allow-host) and POSTs from web pages
(a foreign Origin) are refused.

With --review RESULTS_FILE (what infer or watch wrote, JSON Lines or CSV; a file
watch still writes is read live) it also serves the review page at /review: the
flagged images, lowest confidence first, to accept or correct, each decision
appended to the audit file (docs/review.md)."""


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
    review: Annotated[Optional[Path], typer.Option(
        "--review", metavar="RESULTS_FILE", show_default=False,
        help="Serve the review page (/review) for this results file of infer or watch.")
    ] = None,
    audit: Annotated[Optional[Path], typer.Option(
        "--audit", metavar="AUDIT_FILE", show_default=False,
        help="Append review decisions here. Default: <RESULTS_FILE>.audit.jsonl beside it.")
    ] = None,
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
    if audit is not None and review is None:
        fail("--audit needs --review RESULTS_FILE")
    audit_file = check_review_files(review, audit, model) if review is not None else None
    sock = bind_socket(host, port)
    classifier = open_classifier(model, provider.value, threads, review_below)
    station = open_station(classifier, review, audit_file) if review is not None else None
    app = create_app(classifier, int(max_upload_mb * 2**20), batch_window_ms, host=host,
                     port=port, allowed_hosts=allow_host or (), review=station)
    for name in ("multipart", "python_multipart"):  # a malformed upload is the client's problem
        logging.getLogger(name).setLevel(logging.ERROR)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    typer.echo(f"Serving {classifier.model_path.name} on http://{_url_host(host)}:{port}",
               err=True)
    if station is not None:
        typer.echo(f"Review page: http://{_url_host(host)}:{port}/review (decisions to "
                   f"{display_path(station.audit.path)})", err=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if station is not None:
            station.close()
    raise typer.Exit(EXIT_OK)


def check_review_files(results: Path, audit: Optional[Path], model: Optional[str]) -> Path:
    """The audit file to use; exit 2 when --review or --audit cannot work."""
    from leukedge.runtime.files import same_name

    from .destination import model_file

    if results.exists() and not results.is_file():
        fail(f"--review {display_path(results)} is not a file")
    if not results.parent.is_dir():
        fail(f"--review {display_path(results)}: its folder does not exist")
    audit = audit if audit is not None else results.with_name(results.name + ".audit.jsonl")
    for other, what in [(results, "the results file"),
                        *[(m, "the model") for m in model_file(model)]]:
        if same_name(audit) == same_name(other):
            fail(f"--audit {display_path(audit)} is {what}; give another file")
    if audit.exists() and not audit.is_file():
        fail(f"--audit {display_path(audit)} is not a file")
    return audit


def open_station(classifier, results: Path, audit: Path):
    """The review station, or exit 2 saying why the audit file cannot be used."""
    from leukedge.runtime.review_station import ReviewStation

    if not results.exists():
        typer.echo(f"Note: {display_path(results)} does not exist yet; the queue fills when "
                   "it does.", err=True)
    with reported():
        station = ReviewStation(classifier, results, audit)
    station.refresh()
    others = {r.model_sha256 for r in station.results.latest.values() if r.model_sha256}
    served = classifier.provenance["model_sha256"]
    if others - {served}:
        typer.echo(f"Warning: {display_path(results)} was written by another model than the "
                   "one served; the audit records the model named in each row, the stain "
                   "outline view shows the served model's.", err=True)
    return station


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
