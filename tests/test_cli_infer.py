"""`leukedge infer` and `leukedge info` through Typer's CliRunner (and once as the installed script)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.runtime import Classifier

ROW_KEYS = ["path", "label", "confidence", "probabilities", "needs_review", "review_reasons",
            "input_checks", "seconds", "error", "overlay", "timestamp", "model", "model_sha256",
            "precision", "leukedge_version"]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def json_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, sample_images) -> dict[str, Path]:
    """Two good smears around every kind of bad input, keyed by the reason each must report."""
    d = tmp_path_factory.mktemp("mixed")
    good = sample_images[0].read_bytes()
    files = {"good1": d / "a_good.jpg", "missing": d / "b_absent.jpg", "empty file": d / "c_empty.jpg",
             "truncated JPEG": d / "d_cut.jpg", "not an image file": d / "e_notes.jpg",
             "grayscale": d / "f_gray.png", "16-bit": d / "g_deep.png",
             "unsupported image format GIF": d / "h_anim.gif", "good2": d / "i_good.jpg"}
    files["good1"].write_bytes(good)
    files["good2"].write_bytes(sample_images[5].read_bytes())
    files["empty file"].write_bytes(b"")
    files["truncated JPEG"].write_bytes(good[: len(good) // 2])
    files["not an image file"].write_text("sample 17, stained 2026-11-20\n" * 5)
    cv2.imwrite(str(files["grayscale"]), np.full((16, 16), 90, np.uint8))
    cv2.imwrite(str(files["16-bit"]), np.full((16, 16, 3), 4000, np.uint16))
    files["unsupported image format GIF"].write_bytes(bytes.fromhex(
        "47494638396101000100800000000000ffffff2c00000000010001000002024401003b"))
    return files


# --------------------------------------------------------------------------- formats


def test_json_lines_one_object_per_input_in_order(tiny_model_path, sample_images):
    result = invoke("infer", *sample_images, "--model", tiny_model_path, "--format", "json",
                    "--batch-size", 3)
    assert result.exit_code == 0, result.output
    rows = json_rows(result.stdout)
    assert [r["path"] for r in rows] == [str(p) for p in sample_images]
    expected = Classifier(tiny_model_path, provider="cpu").predict_batch(sample_images)
    sha = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    for row, pred in zip(rows, expected):
        assert list(row) == ROW_KEYS and row["error"] is None
        assert row["label"] == pred.label and row["needs_review"] is False
        assert row["confidence"] == pytest.approx(pred.confidence, abs=1e-3)
        assert list(row["probabilities"]) == ["Benign", "Early", "Pre", "Pro"]
        assert row["model"] == "tiny.onnx" and row["model_sha256"] == sha
        assert row["precision"] == "fp32" and row["seconds"] > 0
        assert row["timestamp"].endswith("+00:00") and row["overlay"] is None
    assert "8/8 images classified" in result.stderr


def test_csv_has_flattened_probability_columns(tiny_model_path, sample_images):
    result = invoke("infer", *sample_images[:3], "-m", tiny_model_path, "-f", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["path", "label", "confidence", "needs_review", "review_reasons",
                             "prob_Benign", "prob_Early", "prob_Pre", "prob_Pro", "error",
                             "seconds", "overlay", "timestamp", "model", "model_sha256",
                             "precision", "leukedge_version"]
    for row in rows:
        probs = [float(row[f"prob_{c}"]) for c in ("Benign", "Early", "Pre", "Pro")]
        assert float(row["confidence"]) == max(probs) and row["error"] == ""
        assert row["needs_review"] == "false"


def test_table_is_human_readable(tiny_model_path, sample_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(sample_images[0], "smear.jpg")
    result = invoke("infer", "smear.jpg", "-m", tiny_model_path, "--review-below", "1")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["PATH", "LABEL", "CONF", "REVIEW"]
    assert row.split()[0] == "smear.jpg" and "low confidence" in row
    assert "1 need review (confidence < 1" in result.stderr


def test_table_to_a_file_keeps_whole_paths_and_a_terminal_gets_them_shortened(
        tiny_model_path, sample_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deep = Path("a-very-long-folder-name-for-one-slide-scan-session" * 2) / "cell_0042.jpg"
    deep.parent.mkdir()
    shutil.copyfile(sample_images[0], deep)
    result = invoke("infer", deep, "-m", tiny_model_path)  # CliRunner's stdout is no terminal
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert row.split()[0] == str(deep)
    assert row.index(row.split()[1]) == header.index("LABEL")
    from leukedge.cli.output import RowFormatter

    shown = RowFormatter("table", ["a"], [str(deep)], shorten=True).line(
        {"path": str(deep), "label": "a", "confidence": 0.9, "needs_review": False})
    assert shown.split()[0].startswith("...") and shown.split()[0].endswith("/cell_0042.jpg")


def test_folders_globs_and_recursion(tiny_model_path, sample_images, tmp_path):
    (tmp_path / "sub").mkdir()
    for i, src in enumerate(sample_images[:3]):
        shutil.copyfile(src, (tmp_path / "sub" if i == 2 else tmp_path) / f"s{i}.jpg")
    (tmp_path / "readme.txt").write_text("not listed")
    flat = json_rows(invoke("infer", tmp_path, "-m", tiny_model_path, "-f", "json").stdout)
    assert [Path(r["path"]).name for r in flat] == ["s0.jpg", "s1.jpg"]
    deep = json_rows(invoke("infer", tmp_path, "-r", "-m", tiny_model_path, "-f", "json").stdout)
    assert sorted(Path(r["path"]).name for r in deep) == ["s0.jpg", "s1.jpg", "s2.jpg"]
    globbed = invoke("infer", str(tmp_path / "s*.jpg"), str(tmp_path / "none*.png"),
                     "-m", tiny_model_path, "-f", "json")
    assert globbed.exit_code == 0 and len(json_rows(globbed.stdout)) == 2
    assert "no images in" in globbed.stderr and "none*.png" in globbed.stderr


# --------------------------------------------------------------------------- --output


def test_output_file_is_written_atomically_and_matches_stdout(tiny_model_path, sample_images,
                                                               tmp_path):
    target = tmp_path / "out" / "results.jsonl"
    target.parent.mkdir()
    target.write_text("old results\n")
    args = ("infer", *sample_images, "-m", tiny_model_path, "-f", "json")
    to_file = invoke(*args, "--output", target)
    assert to_file.exit_code == 0, to_file.output
    assert to_file.stdout == ""
    volatile = ("seconds", "timestamp")
    strip = lambda text: [{k: v for k, v in r.items() if k not in volatile}  # noqa: E731
                          for r in json_rows(text)]
    assert strip(target.read_text()) == strip(invoke(*args).stdout)
    assert len(json_rows(target.read_text())) == len(sample_images)
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.jsonl"]  # no temp file left


def test_output_pointing_at_a_folder_is_a_usage_error(tiny_model_path, sample_images, tmp_path):
    result = invoke("infer", sample_images[0], "-m", tiny_model_path, "-o", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.stderr


# --------------------------------------------------------------------------- bad inputs: exit 1


def test_every_bad_input_gets_an_error_row_and_exit_1(tiny_model_path, bad_inputs):
    paths = list(bad_inputs.values())
    result = invoke("infer", *paths, "-m", tiny_model_path, "-f", "json", "--batch-size", 2)
    assert result.exit_code == 1, result.output
    rows = json_rows(result.stdout)
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for (reason, path), row in zip(bad_inputs.items(), rows):
        if reason.startswith("good"):
            assert row["error"] is None and row["label"] in ("Benign", "Early", "Pre", "Pro")
        else:
            expected = "file not found" if reason == "missing" else reason
            assert row["error"].startswith(f"{path}: ") and expected in row["error"], row
            assert row["label"] is row["confidence"] is row["probabilities"] is None
            assert row["needs_review"] is True
    assert "2/9 images classified" in result.stderr and "7 failed" in result.stderr
    assert "Traceback" not in result.output


def test_bad_inputs_in_csv_and_table(tiny_model_path, bad_inputs):
    paths = [bad_inputs["good1"], bad_inputs["empty file"]]
    as_csv = list(csv.DictReader(io.StringIO(
        invoke("infer", *paths, "-m", tiny_model_path, "-f", "csv").stdout)))
    assert as_csv[0]["error"] == "" and "empty file" in as_csv[1]["error"]
    assert as_csv[1]["label"] == as_csv[1]["prob_Pro"] == ""
    table = invoke("infer", *paths, "-m", tiny_model_path)
    assert table.exit_code == 1
    assert "ERROR" in table.stdout.splitlines()[2] and "empty file" in table.stdout


# --------------------------------------------------------------------------- usage errors: exit 2


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "xml"),
    (["--batch-size", "0"], "batch-size"),
    (["--review-below", "1.5"], "review-below"),
    (["--provider", "tpu"], "tpu"),
    (["--threads", "0"], "threads"),
    (["--threads", "100000"], "--threads must be between 1 and 256"),
    (["--no-such-option"], "no-such-option"),
])
def test_bad_options_exit_2(tiny_model_path, sample_images, args, message):
    result = invoke("infer", sample_images[0], "-m", tiny_model_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_no_paths_and_no_images_exit_2(tiny_model_path, tmp_path):
    assert invoke("infer").exit_code == 2
    result = invoke("infer", tmp_path, "-m", tiny_model_path)
    assert result.exit_code == 2 and "no images found" in result.stderr


@pytest.mark.parametrize("kind, message", [
    ("missing", "absent.onnx: model file not found"),
    ("corrupt", "ONNX Runtime cannot load this model"),
    ("no contract", "not a leukedge model"),
])
def test_unusable_models_exit_2_without_traceback(make_tiny_onnx, sample_images, tmp_path, kind,
                                                  message):
    model = tmp_path / "absent.onnx"
    if kind == "corrupt":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(b"\x00\x01junk" * 50)
    elif kind == "no contract":
        model = make_tiny_onnx(tmp_path / "plain.onnx", contract=False)
    result = invoke("infer", sample_images[0], "--model", model)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_bundled_default_model_exits_2_with_a_hint(sample_images, monkeypatch, tmp_path):
    from leukedge.runtime import models

    monkeypatch.setattr(models, "MODELS_DIR", tmp_path / "no-models-here")
    result = invoke("infer", sample_images[0])
    assert result.exit_code == 2 and "No bundled model 'default'" in result.stderr
    assert "--model" in result.stderr and "Traceback" not in result.output


def test_bundled_default_model_classifies_the_bundled_samples():
    """The README's first command: every bundled sample gets a label (the folder is the truth)."""
    from leukedge.runtime.models import MODELS_DIR

    samples = MODELS_DIR.parent / "samples"
    result = invoke("infer", samples, "--recursive", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 8 and all(r["error"] is None for r in rows)
    wrong = [r for r in rows if r["label"] != Path(r["path"]).parent.name]
    assert wrong == [], rows  # measured: 8 of 8 right (docs/RESULTS.md)


def test_bundled_samples_were_not_used_to_train_the_bundled_models():
    """The samples must be images no bundled model trained or calibrated on: they come from
    the part of the data set held out of the final training (see the samples' README)."""
    from leukedge.runtime.contract import read_contract
    from leukedge.runtime.files import sha256_file
    from leukedge.runtime.models import MODELS_DIR, bundled_models

    samples = sorted((MODELS_DIR.parent / "samples").glob("*/*.jpg"))
    assert len(samples) == 8
    digests = {sha256_file(p) for p in samples}
    for name, path in bundled_models().items():
        excluded = set(read_contract(path).provenance.get("excluded_sha256", ()))
        assert digests <= excluded, f"{name} may have trained on a bundled sample"


def test_cuda_request_without_cuda_exits_2(tiny_model_path, sample_images):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    result = invoke("infer", sample_images[0], "-m", tiny_model_path, "--provider", "cuda")
    assert result.exit_code == 2 and "provider 'cuda' was requested" in result.stderr


def test_help_states_the_exit_codes():
    result = invoke("infer", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Exit codes: 0 = every input was classified; 1 = some inputs failed" in text
    assert "2 = usage error or unusable model" in text
    for line in result.output.splitlines():
        assert len(line) <= 80, line


# --------------------------------------------------------------------------- overlays


def test_overlay_pngs_are_written_for_classified_images(tiny_model_path, bad_inputs, tmp_path):
    out = tmp_path / "overlays"
    paths = [bad_inputs["good1"], bad_inputs["empty file"], bad_inputs["good2"]]
    result = invoke("infer", *paths, "-m", tiny_model_path, "--overlay-dir", out,
                    "--review-below", "1")
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a_good.overlay.png", "i_good.overlay.png"]
    overlay = cv2.imread(str(out / "a_good.overlay.png"))
    original = cv2.imread(str(paths[0]))
    assert overlay.shape == original.shape
    assert (overlay != original).any(axis=2).mean() > 0.01  # outline and caption drawn
    rows = json_rows(invoke("infer", *paths, "-m", tiny_model_path, "--overlay-dir", out,
                            "-f", "json").stdout)
    assert [r["overlay"] for r in rows] == [str(out / "a_good.overlay.png"), None,
                                            str(out / "i_good.overlay.png")]


# --------------------------------------------------------------------------- info, models


def test_info_is_a_readable_report_and_json(tiny_model_path):
    table = invoke("info", tiny_model_path)
    assert table.exit_code == 0, table.output
    for title in ("Model", "Classes", "Preprocessing (inside the model)", "Outputs", "Review"):
        assert title in table.stdout.splitlines()
    assert "Benign, Early, Pre, Pro" in table.stdout and "usable here  yes" in table.stdout
    as_json = json.loads(invoke("info", tiny_model_path, "--format", "json").stdout)
    assert as_json["size_bytes"] == tiny_model_path.stat().st_size and as_json["usable"]
    assert len(as_json["sha256"]) == 64
    assert as_json["contract"]["classes"] == ["Benign", "Early", "Pre", "Pro"]
    assert as_json["contract"]["preprocessing"]["input_size"] == [32, 32]


def test_info_without_argument_describes_the_default_model():
    from leukedge.runtime.models import ModelNotFoundError, default_model_path

    try:
        default = default_model_path()
    except ModelNotFoundError:
        pytest.skip("no bundled default model in this checkout")
    result = invoke("info")
    assert result.exit_code == 0 and default.name in result.stdout
    metrics = result.stdout.split("\nMetrics\n", 1)
    assert len(metrics) == 2 and "measured on" in metrics[1], "where the metrics come from"


def test_info_shows_but_flags_a_model_infer_would_refuse(make_tiny_onnx, tmp_path):
    old = {"schema": "leukedge.contract", "schema_version": 1, "classes": ["a", "b"],
           "precision": "fp32", "inputs": []}
    path = make_tiny_onnx(tmp_path / "old.onnx", raw_contract=json.dumps(old))
    result = invoke("info", path)
    assert result.exit_code == 2 and "usable here  no: made by leukedge 0.1" in result.stdout


def test_info_refuses_non_leukedge_files(make_tiny_onnx, tmp_path):
    plain = make_tiny_onnx(tmp_path / "plain.onnx", contract=False)
    result = invoke("info", plain)
    assert result.exit_code == 2 and f"{plain}: not a leukedge model" in result.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk" * 10)
    result = invoke("info", junk)
    assert result.exit_code == 2 and "junk.onnx: ONNX Runtime cannot load" in result.stderr
    result = invoke("info", tmp_path / "absent.onnx")
    assert result.exit_code == 2 and "model file not found" in result.stderr
    assert "Traceback" not in result.output


def test_models_lists_the_bundled_models():
    from leukedge.runtime.models import bundled_models

    result = invoke("models", "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(bundled_models())
    assert all("problem" not in r for r in rows), rows
    assert sum(r["default"] for r in rows) == 1, "exactly one file is what `default` means"


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("leukedge ")


# --------------------------------------------------------------------------- the installed script


def test_installed_console_script(tiny_model_path, bad_inputs):
    script = Path(sys.executable).parent / "leukedge"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    done = subprocess.run([str(script), "infer", str(bad_inputs["good1"]), str(bad_inputs["missing"]),
                           "--model", str(tiny_model_path), "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    rows = json_rows(done.stdout)
    assert rows[0]["error"] is None and "file not found" in rows[1]["error"]
