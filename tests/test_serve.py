"""`leukedge serve`: the real server on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from leukedge.runtime.contract import SCHEMA_VERSION

pytest.importorskip("fastapi", reason="leukedge serve needs the [serve] extra")
pytest.importorskip("uvicorn", reason="leukedge serve needs the [serve] extra")

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    """What the module's server writes to stderr."""
    return tmp_path_factory.mktemp("serve") / "stderr.txt"


@pytest.fixture(scope="module")
def server(tiny_model_path, server_log):
    port = _free_port()
    with open(server_log, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "leukedge.cli", "serve", "--port",
                                 str(port), "--model", str(tiny_model_path), "--max-upload-mb",
                                 "1"], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _request(port, "GET", "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the server did not answer /healthz: " + server_log.read_text()[-500:])
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
    assert len(model["sha256"]) == 64 and model["contract"]["schema_version"] == SCHEMA_VERSION


def test_classify_gives_infers_row(server, sample_images):
    status, row = classify(server, [("smear.jpg", sample_images[0].read_bytes())])
    assert status == 200 and row["path"] == "smear.jpg" and row["error"] is None
    assert row["label"] in row["probabilities"] and len(row["model_sha256"]) == 64
    assert set(row) >= {"confidence", "needs_review", "review_reasons", "input_checks", "precision"}


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


# --------------------------------------------------------------------------- hygiene (issue 19)


def _raw(port: int, data: bytes, pause: float = 0.0, rest: bytes = b"", read: bool = False):
    """Send bytes on a raw connection (127.0.0.1 only), maybe pause and send more, then close."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
        if rest:
            s.sendall(rest)
        answer = b""
        while read and (chunk := s.recv(65536)):  # the answers here close the connection
            answer += chunk
        return answer


def _post_head(port: int, length: int, content_type: str = "multipart/form-data; boundary=xx",
               close: bool = False) -> bytes:
    return (f"POST /v1/classify HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: "
            f"{content_type}\r\nContent-Length: {length}\r\n"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n").encode()


def test_client_misbehaviour_leaves_no_traceback_in_the_log(server, server_log, sample_images):
    part = (b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            + sample_images[0].read_bytes()[:4000])
    for _ in range(3):  # slowloris: a partial request, sent slowly, then gone
        _raw(server, b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n", 0.2, b"X-Slow: 1\r\n")
    for _ in range(3):  # gone mid-upload: the body is cut short
        _raw(server, _post_head(server, 500_000) + part, 0.2)
    for body in (b"garbage without a boundary\r\n", part):  # malformed / unterminated multipart
        answer = _raw(server, _post_head(server, len(body), close=True) + body, read=True)
        assert answer.startswith(b"HTTP/1.1 400") and b'{"error":' in answer
    answer = _raw(server, _post_head(server, 3, "multipart/form-data", close=True) + b"abc",
                  read=True)
    assert answer.startswith(b"HTTP/1.1 400") and b'{"error":' in answer
    _raw(server, b"\x16\x03\x01 not http at all\r\n\r\n", read=True)
    assert classify(server, [("ok.jpg", sample_images[1].read_bytes())])[0] == 200
    time.sleep(0.5)
    log = server_log.read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


@pytest.mark.parametrize("method, path, status", [("GET", "/nope", 404), ("POST", "/healthz", 405),
                                                  ("PUT", "/v1/model", 405)])
def test_every_route_error_is_error_json(server, method, path, status):
    got, body = _request(server, method, path)
    assert got == status and set(body) == {"error"} and "routes:" in body["error"]


def test_foreign_host_and_cross_origin_post_are_refused(server, sample_images):
    status, body = _request(server, "GET", "/v1/model", headers={"Host": f"rebound.example:{server}"})
    assert status == 400 and "unexpected Host header" in body["error"]
    data, headers = _multipart([("a.jpg", sample_images[0].read_bytes())])
    status, body = _request(server, "POST", "/v1/classify", data,
                            {**headers, "Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in body["error"]
    status, body = _request(server, "POST", "/v1/classify", data,
                            {**headers, "Origin": f"http://localhost:{server}"})
    assert status == 200 and body["error"] is None


def test_a_port_in_use_is_exit_2_before_serving(tiny_model_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "leukedge.cli", "serve", "--port", str(port),
                               "--model", str(tiny_model_path)], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"port {port} on {HOST} is in use" in done.stderr
    assert "Serving" not in done.stderr and "Traceback" not in done.stderr


def test_serve_help_reads_well_at_80_columns():
    from typer.testing import CliRunner

    from leukedge.cli.main import app

    for command in ("serve", "infer"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"},
                                    terminal_width=80)
        assert result.exit_code == 0
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= 80, "\n".join(lines)
        assert "--output" in result.output if command == "infer" else "--allow-host" in \
            result.output
