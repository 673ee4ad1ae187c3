"""An HTTP API for local lab software (a LIMS, a vendor's viewer) that does not run Python.

``create_app(classifier)`` returns an ASGI app (FastAPI; the ``[serve]`` extra):

- ``GET /healthz`` -> ``{"status": "ok"}``;
- ``GET /v1/model`` -> the model's contract, file name, sha256 and review threshold;
- ``POST /v1/classify`` with multipart field(s) ``file`` -> the row ``leukedge infer --format
  json`` writes (one file), or ``{"results": [rows]}`` (several; a bad one carries its error).

Every error, on every route, is JSON ``{"error": "message"}`` naming the problem, never a stack
trace (an image's error also carries ``path`` and ``needs_review``): 413 for an upload over the
limit (enforced while the body streams in, before it is all read) or an image whose header
declares too many pixels, 415 for content that is not a supported image, 400 for an empty,
truncated, grayscale or 16-bit image, a malformed multipart body or a request without a ``file``
field, 404/405 for an unknown route or method, 400/403 for a foreign ``Host`` or a cross-origin
POST (runtime/http_guard.py), 500 for a server fault. Uploads are decoded within a pixel
budget (:class:`~leukedge.runtime.http_guard.PixelBudget`), so a burst of huge uploads is
decoded one after another. The model is
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
from typing import Any, Optional, Sequence

import numpy as np

from .batching import (PIXEL_BUDGET, declared_pixels, pixels_of, plan_runs,
                       release_freed_memory)
from .classifier import Classifier, Prediction
from .contract import leukedge_version
from .decode import MAX_PIXELS, ImageError, decode_image
from .http_guard import (LocalOnly, PixelBudget, TrackedSend, expected_host_names,
                         http_error_message, send_error)
from .inference_protocol import add_routes as add_v2_routes

log = logging.getLogger(__name__)
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
MAX_BATCH = 32
TRIM_AFTER_PIXELS = 16_000_000  # frames run since the heap was last trimmed


class Batcher:
    """One worker thread that runs the model; requests queue pixels and wait for predictions.

    Requests that queued up during the previous run are taken together, at most ``max_batch``
    images and ``pixel_budget`` pixels (an image over the budget runs alone; runs are planned by
    :func:`~leukedge.runtime.batching.plan_runs`, one per image size); with ``window_ms`` > 0
    the worker also waits that long after the first for more. When the queue is empty after
    large frames, the worker hands freed memory back to the OS.
    """

    def __init__(self, classifier: Classifier, window_ms: float = 0.0, max_batch: int = MAX_BATCH,
                 pixel_budget: int = PIXEL_BUDGET):
        self.classifier, self.window, self.max_batch = classifier, window_ms / 1000.0, max_batch
        self.pixel_budget = pixel_budget
        self._queue: "queue.Queue[tuple[np.ndarray, Future]]" = queue.Queue()
        self._carry: Optional[tuple[np.ndarray, Future]] = None  # taken, but over the budget
        self._since_trim = 0
        self._thread = threading.Thread(target=self._work, daemon=True, name="leukedge-batcher")
        self._thread.start()

    def submit(self, pixels: np.ndarray) -> Future:
        future: Future = Future()
        self._queue.put((pixels, future))
        return future

    def _next(self, timeout: float):
        return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()

    def _collect(self) -> list:
        items = [self._carry or self._queue.get()]
        self._carry = None
        pixels = pixels_of(np.shape(items[0][0]))
        deadline = time.monotonic() + self.window
        while len(items) < self.max_batch and pixels < self.pixel_budget:
            try:
                item = self._next(deadline - time.monotonic())
            except queue.Empty:
                break
            if pixels + pixels_of(np.shape(item[0])) > self.pixel_budget:
                self._carry = item  # the first of the next batch
                break
            items.append(item)
            pixels += pixels_of(np.shape(item[0]))
        self._since_trim += pixels
        return items

    def _run(self, items: list) -> None:
        images = [pixels for pixels, _ in items]
        for run in plan_runs([np.shape(p) for p in images], self.max_batch, self.pixel_budget):
            try:
                predictions = self.classifier.predict_pixels([images[i] for i in run])
            except Exception as e:  # the model failed: every waiting request learns why
                for i in run:
                    items[i][1].set_exception(e)
                continue
            for i, prediction in zip(run, predictions):
                items[i][1].set_result(prediction)

    def _work(self) -> None:
        while True:
            items = self._collect()
            self._run(items)
            del items  # the frames go as soon as their requests have their answers
            if (self._since_trim >= TRIM_AFTER_PIXELS and self._carry is None
                    and self._queue.empty()):
                release_freed_memory()
                self._since_trim = 0


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
            return await send_error(send, 413, self._message())
        received, tracked = 0, TrackedSend(send)

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, tracked)
        except _TooLarge:
            if not tracked.started:
                await send_error(send, 413, self._message())

    def _message(self) -> str:
        return (f"upload larger than the server's limit of {self.limit / 2**20:.0f} MiB "
                "(leukedge serve --max-upload-mb)")


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
               batch_window_ms: float = 2.0, max_pixels: int = MAX_PIXELS, *,
               host: str = "127.0.0.1", port: Optional[int] = None,
               allowed_hosts: Sequence[str] = (), pixel_budget: Optional[int] = None,
               review: Optional[Any] = None) -> Any:
    """The ASGI app (FastAPI) serving ``classifier``.

    ``review`` (a :class:`~leukedge.runtime.review_station.ReviewStation`) adds the review
    page and its API (runtime/review_http.py).

    ``host``, ``port`` and ``allowed_hosts`` set which ``Host`` and ``Origin`` values are
    accepted (runtime/http_guard.py; ``port`` None: any port); ``pixel_budget`` (default
    ``batching.PIXEL_BUDGET``) bounds the pixels of the images held by requests in flight.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    batcher = Batcher(classifier, batch_window_ms)
    budget = PixelBudget(pixel_budget or PIXEL_BUDGET)
    common = classifier.provenance
    app = FastAPI(title="leukedge", version=leukedge_version(), docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _http(request, exc):
        return JSONResponse({"error": http_error_message(request, exc)},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return JSONResponse({"error": f"invalid request: {exc.errors()[:1]}"}, status_code=400)

    @app.exception_handler(_TooLarge)
    async def _too_large(request, exc):  # the body passed the limit while the form was read
        return JSONResponse({"error": f"upload larger than the server's limit of "
                                      f"{max_upload_bytes / 2**20:.0f} MiB"}, status_code=413)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request, exc):  # the client left mid-upload: nobody to answer, nothing to log
        return JSONResponse({"error": "client disconnected"}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("internal error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        return {"model": common["model"], "file": classifier.model_path.name,
                "sha256": common["model_sha256"],
                "review_below": classifier.review_below, "classes": list(classifier.classes),
                "contract": classifier.contract.to_dict()}

    async def one(name: str, data: bytes) -> tuple[int, dict]:
        started = time.perf_counter()
        pixels_held = declared_pixels(data, max_pixels)
        await budget.acquire(pixels_held)
        try:
            try:
                pixels = await asyncio.to_thread(decode_image, data, name, max_pixels)
            except ImageError as e:
                return image_error_status(e), {"path": name, "error": str(e),
                                               "needs_review": True}
            del data
            prediction = await asyncio.wrap_future(batcher.submit(pixels))
            del pixels
        finally:
            await budget.release(pixels_held)
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

    add_v2_routes(app, classifier, budget, max_pixels)
    if review is not None:
        from .review_http import add_review_routes

        add_review_routes(app, review, max_pixels)
    names = expected_host_names(host, allowed_hosts)
    return LocalOnly(UploadLimit(app, max_upload_bytes), names, port)


def loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (the only default a lab network should see)."""
    import ipaddress

    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

