"""examples/node: `npm install` is all the set-up, and `node classify.mjs` gives leukedge infer's
labels and probabilities (within 1e-3) on the bundled samples, with the same review flags, for
every bundled file (the default's tree member included: jpeg-js and OpenCV decode a few pixels
one level apart), and the heatmap of a model that has one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.runtime.models import MODELS_DIR, bundled_models

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
SAMPLES = MODELS_DIR.parent / "samples"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed on this machine")
    folder = tmp_path_factory.mktemp("node") / "example"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("node_modules"))
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=folder,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warn" not in done.stderr.lower(), done.stderr  # .npmrc: only configs npm knows
    return folder


def _node(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "classify.mjs", *args], cwd=folder, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("model", ["default-fp32", "default-int8", "fast-fp32", "fast-int8"])
def test_node_gives_infers_answers(installed, model):
    if model not in bundled_models():
        pytest.skip(f"no bundled model {model!r}")
    path = bundled_models()[model]
    samples = sorted(SAMPLES.glob("*/*.jpg"))
    node = _node(installed, "--model", str(path), *map(str, samples))
    assert node.returncode == 0, node.stderr
    js = [json.loads(line) for line in node.stdout.splitlines()]
    py = [json.loads(line) for line in CliRunner().invoke(
        app, ["infer", *map(str, samples), "--model", str(path), "-f", "json"]).stdout.splitlines()]
    assert [r["path"] for r in js] == [r["path"] for r in py]
    for a, b in zip(js, py):
        assert a["label"] == b["label"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-3)
        assert a["needs_review"] == b["needs_review"]
        assert [r["code"] for r in a["review_reasons"]] == [r["code"] for r in b["review_reasons"]]


def test_node_reports_a_bad_file_and_the_contract_reader_refuses_other_models(installed, tmp_path,
                                                                               make_tiny_onnx):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    result = _node(installed, "--model", str(model), str(bad))
    assert result.returncode == 1 and json.loads(result.stdout)["needs_review"] is True
    plain = make_tiny_onnx(tmp_path / "plain.onnx", contract=False)
    refused = _node(installed, "--model", str(plain), str(bad))
    assert refused.returncode == 2 and "not a leukedge model" in refused.stderr


def test_node_picks_the_default_file_as_the_python_runtime_does(installed, tmp_path):
    """INT8 with VNNI, FP32 without it or when the CPU cannot be read (runtime/models.py)."""
    cpuinfo = tmp_path / "cpuinfo"
    script = ("import('./classify.mjs').then(m => console.log(JSON.stringify(["
              "m.defaultModel(true), m.defaultModel(false), m.defaultModel(null), "
              f"m.hasInt8Vnni({json.dumps(str(cpuinfo))}), m.hasInt8Vnni('/nonexistent')])))")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    out = subprocess.run(["node", "-e", script], cwd=installed, capture_output=True, text=True,
                         timeout=60)
    picks = json.loads(out.stdout)
    assert [Path(p).name for p in picks[:3]] == ["leukedge-default-int8.onnx",
                                                 "leukedge-default-fp32.onnx",
                                                 "leukedge-default-fp32.onnx"]
    assert picks[3:] == [False, None]


def test_node_gives_the_heatmap_of_a_model_that_has_one(installed, tmp_path):
    import cv2
    import numpy as np

    from cnn_builders import make_tiny_cnn, patch_image
    from leukedge.runtime.classifier import Classifier

    model = make_tiny_cnn(tmp_path / "cnn.onnx")
    image = tmp_path / "patch.png"
    cv2.imwrite(str(image), patch_image(8, 20)[:, :, ::-1])
    node = _node(installed, "--model", str(model), str(image))
    assert node.returncode == 0, node.stderr
    row = json.loads(node.stdout)
    want = Classifier(model, provider="cpu").predict(image).heatmap
    assert (row["heatmap"]["height"], row["heatmap"]["width"]) == want.shape
    got = np.array(row["heatmap"]["values"]).reshape(want.shape)
    np.testing.assert_allclose(got, want, atol=1e-3)
