"""An HTTP API for local lab software (a LIMS, a vendor's viewer) that does not run Python.

``create_app(classifier)`` returns an ASGI app (FastAPI; the ``[serve]`` extra):

- ``GET /healthz`` -> ``{"status": "ok"}``;
- ``GET /v1/model`` -> the model's contract, file name, sha256 and review threshold;
- ``POST /v1/classify`` with multipart field(s) ``file`` -> the row ``leukedge infer --format
  json`` writes (one file), or ``{"results": [rows]}`` (several; a bad one carries its error).

Bad input gets a 4xx JSON ``{"error": ...}`` naming the problem, never a stack trace: 413 for an
upload over the limit (enforced while the body streams in, before it is all read) or an image
whose header declares too many pixels, 415 for content that is not a supported image, 400 for
an empty, truncated, grayscale or 16-bit image or a request without a ``file`` field. The model is
loaded once; inference runs off the event loop, in a :class:`Batcher` that runs the requests
that queued up while the model was busy as one batch (and with ``batch_window_ms`` > 0 waits that
long for more; measured not to pay on 2 cores, docs/RESULTS.md).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations
# (``request: Request``) at definition time, inside create_app where Request is imported.
import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from .classifier import Classifier, Prediction
from .contract import leukedge_version
from .decode import MAX_PIXELS, ImageError, decode_image
from .files import sha256_file

log = logging.getLogger(__name__)
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
MAX_BATCH = 32


class Batcher:
    """One worker thread that runs the model; requests queue pixels and wait for predictions.

    Requests that queued up during the previous run are taken together (one model run per image
    size); with ``window_ms`` > 0 the worker also waits that long after the first for more.
    """

    def __init__(self, classifier: Classifier, window_ms: float = 0.0, max_batch: int = MAX_BATCH):
        self.classifier, self.window, self.max_batch = classifier, window_ms / 1000.0, max_batch
        self._queue: "queue.Queue[tuple[np.ndarray, Future]]" = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="leukedge-batcher")
        self._thread.start()

    def submit(self, pixels: np.ndarray) -> Future:
        future: Future = Future()
        self._queue.put((pixels, future))
        return future

    def _collect(self) -> list:
        items = [self._queue.get()]
        deadline = time.monotonic() + self.window
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                items.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _work(self) -> None:
        while True:
            items = self._collect()
            try:
                predictions = self.classifier.predict_pixels([p for p, _ in items])
            except Exception as e:  # the model failed: every waiting request learns why
                for _, future in items:
                    future.set_exception(e)
                continue
            for (_, future), prediction in zip(items, predictions):
                future.set_result(prediction)


class _TooLarge(Exception):
    pass


class UploadLimit:
    """ASGI middleware: 413 as soon as a request body passes ``limit`` bytes (or declares it)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_json(send, 413, self._message())
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, self._message())

    def _message(self) -> dict:
        return {"error": f"upload larger than the server's limit of "
                         f"{self.limit / 2**20:.0f} MiB (leukedge serve --max-upload-mb)"}


async def _send_json(send, status: int, body: dict) -> None:
    import json

    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def image_error_status(error: ImageError) -> int:
    """413 for an image too large, 415 for what is not a supported image, else 400."""
    reason = error.reason
    if reason.startswith(("image too large", "file too large")):
        return 413
    if reason.startswith(("unsupported image format", "not an image file", "not a readable")):
        return 415
    return 400


def prediction_row(name: str, prediction: Prediction, seconds: float, common: dict) -> dict:
    from datetime import datetime, timezone

    return {"path": name, **prediction.to_dict(), "seconds": round(seconds, 6), "error": None,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **common}


def create_app(classifier: Classifier, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               batch_window_ms: float = 2.0, max_pixels: int = MAX_PIXELS) -> Any:
    """The ASGI app (FastAPI) serving ``classifier``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    batcher = Batcher(classifier, batch_window_ms)
    sha = sha256_file(classifier.model_path)
    common = {"model": classifier.model_path.name, "model_sha256": sha,
              "precision": classifier.contract.precision, "leukedge_version": leukedge_version()}
    app = FastAPI(title="leukedge", version=leukedge_version(), docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return JSONResponse({"error": f"invalid request: {exc.errors()[:1]}"}, status_code=400)

    @app.exception_handler(_TooLarge)
    async def _too_large(request, exc):  # the body passed the limit while the form was read
        return JSONResponse({"error": f"upload larger than the server's limit of "
                                      f"{max_upload_bytes / 2**20:.0f} MiB"}, status_code=413)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("internal error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        return {"model": classifier.model_path.name, "sha256": sha,
                "review_below": classifier.review_below, "classes": list(classifier.classes),
                "contract": classifier.contract.to_dict()}

    async def one(name: str, data: bytes) -> tuple[int, dict]:
        started = time.perf_counter()
        try:
            pixels = await asyncio.to_thread(decode_image, data, name, max_pixels)
        except ImageError as e:
            return image_error_status(e), {"path": name, "error": str(e), "needs_review": True}
        prediction = await asyncio.wrap_future(batcher.submit(pixels))
        return 200, prediction_row(name, prediction, time.perf_counter() - started, common)

    @app.post("/v1/classify")
    async def classify(request: Request):
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return JSONResponse({"error": "send the image as multipart/form-data, field 'file'"},
                                status_code=415)
        form = await request.form()
        uploads = [f for f in form.getlist("file") if hasattr(f, "read")]
        if not uploads:
            return JSONResponse({"error": "multipart field 'file' is missing"}, status_code=400)
        answers = [await one(f.filename or "upload", await f.read()) for f in uploads]
        if len(answers) == 1:
            status, body = answers[0]
            return JSONResponse(body, status_code=status)
        return JSONResponse({"results": [body for _, body in answers]})

    return UploadLimit(app, max_upload_bytes)


def loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (the only default a lab network should see)."""
    import ipaddress

    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

