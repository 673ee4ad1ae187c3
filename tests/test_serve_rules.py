"""`leukedge serve`'s app in process: one error body shape, the Host and Origin rules, the pixel
budget. Spoken to through ASGI directly (no HTTP client library needed)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="leukedge serve needs the [serve] extra")
pytest.importorskip("multipart", reason="leukedge serve needs the [serve] extra")

from leukedge.runtime import Classifier  # noqa: E402
from leukedge.runtime.http_api import create_app  # noqa: E402
from leukedge.runtime.http_guard import PixelBudget, expected_host_names, split_host  # noqa: E402

from asgi_helpers import asgi_request  # noqa: E402

PORT = 8765
OURS = f"127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def app(tiny_model_path):
    return create_app(Classifier(tiny_model_path, provider="cpu"), max_upload_bytes=2**20,
                      port=PORT)


def call(app, method: str, path: str, headers: dict | None = None, body: bytes = b"",
         host: str | None = OURS, chunks: int = 1):
    """(status, JSON body, headers) of one request through the ASGI app."""
    return asyncio.run(acall(app, method, path, headers, body, host, chunks))


async def acall(app, method: str, path: str, headers: dict | None = None, body: bytes = b"",
                host: str | None = OURS, chunks: int = 1):
    headers = {**({"host": host} if host else {}), **(headers or {})}
    status, data, answer = await asgi_request(app, method, path, headers, body, chunks=chunks,
                                              port=PORT)
    return status, json.loads(data), answer


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="{name}"\r\n\r\n'.encode() + data + b"\r\n"
                    for name, data in files) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def only_error(body) -> str:
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


# --------------------------------------------------------------------------- one error shape


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/nope", 404, "no such route: GET /nope"),
    ("POST", "/healthz", 405, "POST is not allowed on /healthz"),
    ("DELETE", "/v1/classify", 405, "DELETE is not allowed"),
    ("GET", "/docs", 404, "no such route"),
    ("GET", "/openapi.json", 404, "no such route"),
])
def test_routing_errors_use_the_one_error_shape(app, method, path, status, words):
    got, body, headers = call(app, method, path)
    assert got == status and words in only_error(body) and "POST /v1/classify" in body["error"]
    if status == 405:
        assert "allow" in headers  # FastAPI's header kept


def test_upload_errors_use_the_one_error_shape(app, sample_images):
    status, body, _ = call(app, "POST", "/v1/classify", {"content-type": "text/plain"}, b"x")
    assert status == 415 and "multipart/form-data" in only_error(body)
    status, body, _ = call(app, "POST", "/v1/classify", {"content-length": str(5 * 2**20)})
    assert status == 413 and "--max-upload-mb" in only_error(body)
    status, body, _ = call(app, "POST", "/v1/classify", *reversed(multipart([])))
    assert status == 400 and "'file' is missing" in only_error(body)
    big, headers = multipart([("big.jpg", b"\xff" * (2 * 2**20))])  # streamed, no length
    status, body, _ = call(app, "POST", "/v1/classify", headers, big, chunks=8)
    assert status == 413 and "limit" in only_error(body)


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data; boundary=xx", b"garbage without a boundary\r\n"),
    ("multipart/form-data", b"abc"),  # no boundary parameter
])
def test_malformed_multipart_is_a_400_in_the_one_shape(app, content_type, body):
    status, answer, _ = call(app, "POST", "/v1/classify", {"content-type": content_type}, body)
    assert status == 400 and only_error(answer)


def test_a_bad_image_row_keeps_path_and_error(app):
    body, headers = multipart([("notes.jpg", b"lab notes, not pixels" * 10)])
    status, row, _ = call(app, "POST", "/v1/classify", headers, body)
    assert status == 415 and row["path"] == "notes.jpg" and "not an image" in row["error"]
    assert row["needs_review"] is True


# --------------------------------------------------------------------------- Host and Origin


@pytest.mark.parametrize("host", [OURS, f"localhost:{PORT}", f"[::1]:{PORT}", "localhost",
                                  f"LOCALHOST:{PORT}", None])
def test_expected_hosts_are_served(app, host):
    assert call(app, "GET", "/healthz", host=host)[0] == 200


@pytest.mark.parametrize("host", [f"evil.example:{PORT}", "evil.example", "127.0.0.1:9999",
                                  f"127.0.0.2:{PORT}", "[::1", "a:b:c", "localhost:http"])
def test_dns_rebinding_host_is_refused(app, host, sample_images):
    status, body, headers = call(app, "GET", "/v1/model", host=host)
    assert status == 400 and "unexpected Host header" in only_error(body)
    assert not any(k.startswith("access-control") for k in headers)
    upload, mp = multipart([("a.jpg", sample_images[0].read_bytes())])
    assert call(app, "POST", "/v1/classify", mp, upload, host=host)[0] == 400


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"origin": "http://localhost:3000"},  # another local web app
    {"origin": "http://localhost"},
    {"origin": f"https://evil.example:{PORT}"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
])
def test_cross_origin_posts_are_refused(app, sample_images, headers):
    upload, mp = multipart([("a.jpg", sample_images[0].read_bytes())])
    status, body, answer_headers = call(app, "POST", "/v1/classify", {**mp, **headers}, upload)
    assert status == 403 and "cross-origin request refused" in only_error(body)
    assert not any(k.startswith("access-control") for k in answer_headers)


@pytest.mark.parametrize("headers", [
    {},  # curl, a LIMS, Python: no Origin
    {"origin": f"http://127.0.0.1:{PORT}"},
    {"origin": f"http://localhost:{PORT}", "sec-fetch-site": "same-origin"},
    {"sec-fetch-site": "none"},
])
def test_same_origin_and_non_browser_posts_are_served(app, sample_images, headers):
    upload, mp = multipart([("a.jpg", sample_images[0].read_bytes())])
    status, row, _ = call(app, "POST", "/v1/classify", {**mp, **headers}, upload)
    assert status == 200 and row["error"] is None


def test_a_cross_origin_get_is_answered_without_cors_headers(app):
    status, _, headers = call(app, "GET", "/healthz", {"origin": "http://evil.example"})
    assert status == 200 and not any(k.startswith("access-control") for k in headers)


def test_host_names_for_a_bound_address_and_allow_host():
    names = expected_host_names("192.168.1.20", ["Lab-PC.local."])
    assert {"localhost", "127.0.0.1", "::1", "192.168.1.20", "lab-pc.local"} <= names
    assert "evil.example" not in names
    assert split_host("[::1]:8000") == ("::1", 8000) and split_host("Host.Local") == ("host.local",
                                                                                      None)
    assert split_host("[::1") is None and split_host("x:99999") is None


# --------------------------------------------------------------------------- pixel budget


def test_pixel_budget_holds_huge_images_one_at_a_time():
    budget, peak, held = PixelBudget(50), [0], [0]

    async def one(pixels):
        await budget.acquire(pixels)
        held[0] += pixels
        peak[0] = max(peak[0], held[0])
        await asyncio.sleep(0.01)
        held[0] -= pixels
        await budget.release(pixels)

    async def burst():
        await asyncio.gather(*(one(49) for _ in range(6)), *(one(10) for _ in range(6)),
                             one(120))  # larger than the budget: runs alone

    asyncio.run(burst())
    assert peak[0] == 120 and budget.held == 0


def test_serve_decodes_a_burst_within_the_pixel_budget(tiny_model_path, monkeypatch):
    """12 uploads at once, each declaring 1 MP, with a budget of 2 MP: never more than two
    decoded images are held at a time."""
    import cv2

    import leukedge.runtime.http_api as http_api

    held, peak, lock = [0], [0], threading.Lock()
    real_decode = http_api.decode_image

    def counting_decode(data, name, max_pixels):
        pixels = real_decode(data, name, max_pixels)
        with lock:
            held[0] += 1
            peak[0] = max(peak[0], held[0])
        time.sleep(0.02)
        return pixels

    class Counting(Classifier):
        def predict_pixels(self, frames, *a, **k):
            out = super().predict_pixels(frames, *a, **k)
            with lock:
                held[0] -= len(frames)
            return out

    monkeypatch.setattr(http_api, "decode_image", counting_decode)
    app = create_app(Counting(tiny_model_path, provider="cpu"), port=PORT,
                     pixel_budget=2_000_000)
    png = cv2.imencode(".png", np.full((1000, 1000, 3), 120, np.uint8))[1].tobytes()

    uploads = [multipart([(f"{i}.png", png)]) for i in range(12)]

    async def burst():  # one event loop, like the server's
        return await asyncio.gather(*(acall(app, "POST", "/v1/classify", headers, body)
                                      for body, headers in uploads))

    results = asyncio.run(burst())
    assert all(status == 200 for status, _, _ in results)
    assert peak[0] <= 2 and held[0] == 0
