"""examples/node: `npm install` is all the set-up, and `node classify.mjs` gives leukedge infer's
labels, review flags and probabilities for every bundled file, and the heatmap of a model that
has one. On the same pixels (PNG copies of the bundled samples) the probabilities agree within
1e-5; on the JPEG samples themselves within 1e-3, or 1e-2 for the -int8-avx2 files, whose 7-bit
weights amplify the decoders' differences (jpeg-js and OpenCV decode a few pixels one level
apart)."""

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


@pytest.mark.parametrize("model", ["default-fp32", "default-int8", "default-int8-avx2",
                                   "fast-fp32", "fast-int8", "fast-int8-avx2"])
def test_node_gives_infers_answers(installed, model, tmp_path):
    import cv2

    if model not in bundled_models():
        pytest.skip(f"no bundled model {model!r}")
    path = bundled_models()[model]
    jpegs = sorted(SAMPLES.glob("*/*.jpg"))
    pngs = [tmp_path / f"{p.parent.name}-{p.stem}.png" for p in jpegs]
    for jpeg, png in zip(jpegs, pngs):
        cv2.imwrite(str(png), cv2.imread(str(jpeg)))
    jpeg_tolerance = 1e-2 if model.endswith("-avx2") else 1e-3
    for samples, tolerance in ((pngs, 1e-5), (jpegs, jpeg_tolerance)):
        node = _node(installed, "--model", str(path), *map(str, samples))
        assert node.returncode == 0, node.stderr
        js = [json.loads(line) for line in node.stdout.splitlines()]
        py = [json.loads(line) for line in CliRunner().invoke(
            app, ["infer", *map(str, samples), "--model", str(path), "-f", "json"]
        ).stdout.splitlines()]
        assert [r["path"] for r in js] == [r["path"] for r in py]
        for a, b in zip(js, py):
            assert a["label"] == b["label"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=tolerance)
            assert a["needs_review"] == b["needs_review"]
            assert [r["code"] for r in a["review_reasons"]] == \
                [r["code"] for r in b["review_reasons"]]


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
    """INT8 with VNNI, the AVX2 file on other x86 CPUs (FP32 where it is not bundled), FP32
    on other CPUs or when the CPU cannot be read (runtime/models.py)."""
    from leukedge.runtime.models import MODELS_DIR, bundled_models

    cpuinfo = tmp_path / "cpuinfo"
    shelf = json.dumps(str(MODELS_DIR))
    script = ("import('./classify.mjs').then(m => console.log(JSON.stringify(["
              f"m.defaultModel(true), m.defaultModel(false, 'x64', {shelf}), "
              f"m.defaultModel(false, 'arm64', {shelf}), m.defaultModel(null, 'x64', {shelf}), "
              f"m.hasInt8Vnni({json.dumps(str(cpuinfo))}), m.hasInt8Vnni('/nonexistent')])))")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    out = subprocess.run(["node", "-e", script], cwd=installed, capture_output=True, text=True,
                         timeout=60)
    picks = json.loads(out.stdout)
    avx2 = "int8-avx2" if "default-int8-avx2" in bundled_models() else "fp32"
    assert [Path(p).name for p in picks[:4]] == ["leukedge-default-int8.onnx",
                                                 f"leukedge-default-{avx2}.onnx",
                                                 "leukedge-default-fp32.onnx",
                                                 "leukedge-default-fp32.onnx"]
    assert picks[4:] == [False, None]


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
