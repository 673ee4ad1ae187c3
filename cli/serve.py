"""`leukedge serve`: the HTTP API of runtime/http_api.py on uvicorn, for local lab software.

Binds 127.0.0.1 unless --host says otherwise (then it warns: there is no authentication). Needs
the ``[serve]`` extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .errors import EXIT_OK, need
from .options import ModelOption, Provider, ProviderOption, ReviewBelowOption, ThreadsOption

HELP = """Serve the model over HTTP for local software (LIMS, viewers): GET /healthz,
GET /v1/model, POST /v1/classify (multipart field 'file'; several allowed).

Bad uploads get a 4xx JSON error; 413 above --max-upload-mb. Binds 127.0.0.1 by default:
there is no authentication, so only expose it on a network you trust."""


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
) -> None:
    """Serve the model over HTTP (see HELP)."""
    need("fastapi", "serve", "leukedge serve")
    need("uvicorn", "serve", "leukedge serve")
    import uvicorn

    from leukedge.runtime.http_api import create_app, loopback

    from .infer import open_classifier

    if not loopback(host):
        typer.echo(f"Warning: binding {host}: anyone who can reach this address can use the "
                   "model; leukedge serve has no authentication.", err=True)
    classifier = open_classifier(model, provider.value, threads, review_below)
    app = create_app(classifier, int(max_upload_mb * 2**20), batch_window_ms)
    typer.echo(f"Serving {classifier.model_path.name} on http://{host}:{port}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge serve` to the app."""
    app.command("serve", help=HELP, short_help="Serve the model over HTTP (127.0.0.1).")(serve)
