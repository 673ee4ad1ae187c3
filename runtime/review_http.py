"""The review station's routes on `leukedge serve --review` (beside runtime/http_api.py's):

- ``GET /review``: the page (runtime/assets/review.html; one file, inline script and style,
  nothing fetched from elsewhere, so it works offline);
- ``GET /v1/review/queue``: the queue as JSON (:meth:`ReviewStation.queue`);
- ``GET /v1/review/image/{id}?view=image|overlay|saved``: a view of a row's image, JPEG;
- ``POST /v1/review/decision`` with a JSON body ``{"path", "label", "reviewer"}`` (and
  ``"replace": true`` to replace an earlier decision on the same bytes): the audit record.

Errors are the API's ``{"error": message}``: 400 bad body, label or reviewer, 404 unknown
path or id, 409 already decided (the body carries ``decided``, the earlier record) or changed
since classified, 410 file gone, 415 a body that is not JSON, 422 an image that cannot be
shown, 507 the audit file could not be written. The Host and Origin rules of
runtime/http_guard.py apply to every route; a decision must be ``application/json``, which a
cross-site form cannot send.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations.
import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Any

from .http_guard import PRIVATE_HEADERS, page_headers
from .review_audit import AuditError
from .review_images import ImageViews
from .review_station import ReviewRefused, ReviewStation

PAGE = Path(__file__).with_name("assets") / "review.html"
REVIEW_ROUTES = ("GET /review", "GET /v1/review/queue", "GET /v1/review/image/{id}",
                 "POST /v1/review/decision")


@lru_cache(maxsize=1)
def review_page() -> tuple[str, dict]:
    """The page's HTML and its headers (the policy holds the hashes of its inline parts)."""
    html = PAGE.read_text(encoding="utf-8")
    return html, page_headers(html)


def _refused(e: ReviewRefused) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": str(e), **e.extra}, status_code=e.status,
                        headers=PRIVATE_HEADERS)


def add_review_routes(app: Any, station: ReviewStation, max_pixels: int) -> None:
    """Adds the review routes for ``station`` to the FastAPI ``app``."""
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    views = ImageViews(station, max_pixels)
    app.state.more_routes = REVIEW_ROUTES

    @app.get("/review")
    async def page():
        html, headers = review_page()
        return HTMLResponse(html, headers=headers)

    @app.get("/v1/review/queue")
    async def queue():
        return Response(await asyncio.to_thread(station.queue_json),
                        media_type="application/json", headers=PRIVATE_HEADERS)

    @app.get("/v1/review/image/{item_id}")
    async def image(item_id: str, view: str = "image"):
        try:
            data = await asyncio.to_thread(views.render, item_id, view)
        except ReviewRefused as e:
            return _refused(e)
        return Response(data, media_type="image/jpeg", headers=PRIVATE_HEADERS)

    @app.post("/v1/review/decision")
    async def decision(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _refused(ReviewRefused(415, "send the decision as application/json: "
                                               '{"path", "label", "reviewer"}'))
        try:
            body = await request.json()
        except ValueError:
            return _refused(ReviewRefused(400, "the body is not JSON"))
        try:
            record = await asyncio.to_thread(station.decide, body)
        except ReviewRefused as e:
            return _refused(e)
        except AuditError as e:
            return _refused(ReviewRefused(507, str(e)))
        return JSONResponse(record, headers=PRIVATE_HEADERS)
