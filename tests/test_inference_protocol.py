"""The Open Inference Protocol (KServe v2 / Triton REST) on `leukedge serve`, driven by the real
`tritonclient.http` client: the same probabilities as `leukedge infer` (<= 1e-6), binary and
JSON tensors, metadata, health, and 4xx errors for what the protocol cannot answer."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.runtime.decode import read_image

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] ([dev])")
pytest.importorskip("fastapi", reason="leukedge serve needs the [serve] extra")

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def served(tiny_model_path, tmp_path_factory):
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("v2") / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "leukedge.cli", "serve", "--port",
                                 str(port), "--model", str(tiny_model_path)],
                                stdout=subprocess.DEVNULL, stderr=err)
    client = httpclient.InferenceServerClient(f"{HOST}:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                break
        except Exception:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("serve did not get ready: " + log.read_text()[-500:])
    yield client, tiny_model_path.stem
    client.close()
    proc.terminate()
    proc.wait(timeout=15)


def _infer_rows(model_path, paths):
    out = CliRunner().invoke(app, ["infer", *map(str, paths), "-m", str(model_path), "-f",
                                   "json"]).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("binary", [True, False])
def test_the_real_client_gets_infers_probabilities(served, tiny_model_path, sample_images,
                                                   binary):
    client, name = served
    pixels = np.stack([read_image(p) for p in sample_images[:3]])  # all 224 x 224
    image = httpclient.InferInput("image", list(pixels.shape), "UINT8")
    image.set_data_from_numpy(pixels, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(o, binary_data=binary)
              for o in ("probs", "contrast")]
    result = client.infer(name, [image], outputs=wanted)
    probs = result.as_numpy("probs")
    rows = _infer_rows(tiny_model_path, sample_images[:3])
    expected = np.array([[r["probabilities"][c] for c in ("Benign", "Early", "Pre", "Pro")]
                         for r in rows])
    assert probs.shape == (3, 4) and np.abs(probs - expected).max() <= 1e-6
    assert result.as_numpy("contrast").shape == (3,)


def test_metadata_health_and_the_served_name(served):
    client, name = served
    assert client.is_server_live() and client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert meta["name"] == name and meta["inputs"][0] == {
        "name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}
    assert {o["name"] for o in meta["outputs"]} >= {"probs", "contrast", "stain_coverage"}
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_what_the_protocol_cannot_answer_is_a_4xx(served):
    from tritonclient.utils import InferenceServerException

    client, name = served
    with pytest.raises(InferenceServerException, match="no model 'resnet'"):
        client.get_model_metadata("resnet")
    floats = httpclient.InferInput("image", [1, 8, 8, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(InferenceServerException, match="datatype UINT8"):
        client.infer(name, [floats])
    image = httpclient.InferInput("image", [1, 8, 8, 3], "UINT8")
    image.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(InferenceServerException, match="unknown output 'logits'"):
        client.infer(name, [image], outputs=[httpclient.InferRequestedOutput("logits")])
