"""`leukedge serve`: the real server on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("fastapi", reason="leukedge serve needs the [serve] extra")
pytest.importorskip("uvicorn", reason="leukedge serve needs the [serve] extra")

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "leukedge.cli", "serve", "--port", str(port),
                             "--model", str(tiny_model_path), "--max-upload-mb", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _request(port, "GET", "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the server did not answer /healthz: " + proc.stderr.read().decode()[-500:])
    yield port
    proc.terminate()
    proc.wait(timeout=15)


def _request(port: int, method: str, path: str, body: bytes = b"", headers=None):
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else None


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                     + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def classify(port: int, files: list[tuple[str, bytes]]):
    body, headers = _multipart(files)
    return _request(port, "POST", "/v1/classify", body, headers)


def test_health_and_model(server):
    assert _request(server, "GET", "/healthz") == (200, {"status": "ok"})
    status, model = _request(server, "GET", "/v1/model")
    assert status == 200 and model["classes"] == ["Benign", "Early", "Pre", "Pro"]
    assert len(model["sha256"]) == 64 and model["contract"]["schema_version"] == 2


def test_classify_gives_infers_row(server, sample_images):
    status, row = classify(server, [("smear.jpg", sample_images[0].read_bytes())])
    assert status == 200 and row["path"] == "smear.jpg" and row["error"] is None
    assert row["label"] in row["probabilities"] and len(row["model_sha256"]) == 64
    assert set(row) >= {"confidence", "needs_review", "review_reasons", "quality", "precision"}


def test_several_files_in_one_request(server, sample_images):
    status, body = classify(server, [("a.jpg", sample_images[0].read_bytes()),
                                     ("b.jpg", b"not an image")])
    assert status == 200
    good, bad = body["results"]
    assert good["error"] is None and "not an image file" in bad["error"]


@pytest.mark.parametrize("name, data, status, words", [
    ("empty.jpg", b"", 400, "empty file"),
    ("notes.jpg", b"lab notes, not pixels" * 10, 415, "not an image file"),
    ("anim.gif", b"GIF89a" + b"\x00" * 40, 415, "unsupported image format GIF"),
])
def test_bad_uploads_get_a_4xx_that_says_why(server, name, data, status, words):
    got, body = classify(server, [(name, data)])
    assert got == status and words in body["error"] and "Traceback" not in json.dumps(body)


def test_truncated_and_oversized(server, sample_images):
    data = sample_images[0].read_bytes()
    status, body = classify(server, [("cut.jpg", data[: len(data) // 2])])
    assert status == 400 and "truncated JPEG" in body["error"]
    status, body = classify(server, [("big.bin", b"\xff" * (2 * 2**20))])  # over --max-upload-mb 1
    assert status == 413 and "limit" in body["error"]


def test_requests_without_a_file_and_the_server_keeps_serving(server, sample_images):
    assert _request(server, "POST", "/v1/classify", b"x=1",
                    {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    body, headers = _multipart([])
    assert _request(server, "POST", "/v1/classify", body, headers)[0] == 400
    assert classify(server, [("ok.jpg", sample_images[1].read_bytes())])[0] == 200


def test_binds_loopback_by_default_and_warns_otherwise():
    from leukedge.runtime.http_api import loopback

    assert loopback("127.0.0.1") and loopback("localhost") and loopback("::1")
    assert not loopback("0.0.0.0") and not loopback("192.168.1.20")
