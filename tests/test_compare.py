"""compare: metrics columns against hand-computed values, every output format, the CLI; bench keys."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.modelkit.evaluation.benchmark import bench_model
from leukedge.modelkit.evaluation.comparison import Candidate, compare_candidates, compare_models
from leukedge.modelkit.evaluation.comparison_report import COLUMNS, FORMATS, render, write_report
from leukedge.modelkit.evaluation.labelled import load_labelled

CLASSES = ("Benign", "Early", "Pre", "Pro")
RGB = {"red": (200, 60, 60), "green": (60, 200, 60), "blue": (60, 60, 200), "dark": (40, 40, 40)}
# folder (true class) -> colours; the stand-in model says red=Benign, green=Early, blue=Pre, dark=Pro
LAYOUT = {"Benign": ["red", "red", "green"], "Early": ["green", "green"],
          "Pre": ["blue", "dark"], "Pro": ["dark", "red"]}


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    for label, colours in LAYOUT.items():
        (root / label).mkdir()
        for i, name in enumerate(colours):
            image = np.full((16, 16, 3), RGB[name], np.uint8)
            cv2.imwrite(str(root / label / f"{i}_{name}.png"), image[:, :, ::-1])
    return root


def colour_model(dark_class: int):
    """One-hot probabilities from the mean colour of uint8 pixels: brightest channel, or
    ``dark_class`` if dark."""
    def predict(pixels: np.ndarray) -> np.ndarray:
        means = pixels.mean(axis=(1, 2)) / 255
        k = np.where(means.max(axis=1) < 0.3, dark_class, means.argmax(axis=1))
        return np.eye(4, dtype=np.float32)[k]
    return predict


def _candidate(name: str, dark_class: int) -> Candidate:
    return Candidate(name=name, predict=colour_model(dark_class), classes=CLASSES,
                     precision="fp32", provider="cpu", size_bytes=2_000_000)


def test_metrics_columns_match_hand_computed_values(colour_data):
    labelled = load_labelled(colour_data, CLASSES)
    table = compare_candidates([_candidate("ref", 3), _candidate("other", 2)], labelled,
                               iterations=3, warmup=0)
    ref, other = table.rows
    # 9 images, 6 right; errors: Benign->Early (10), Pre->Pro (10), Pro->Benign (30)
    assert ref["accuracy"] == pytest.approx(6 / 9)
    assert ref["total_cost"] == 50 and ref["cost_per_sample"] == pytest.approx(50 / 9)
    assert ref["cost_sensitive_accuracy"] == pytest.approx(1 - 50 / (220 * 9 / 4))
    f1 = {"Benign": 2 / 3, "Early": 0.8, "Pre": 2 / 3, "Pro": 0.5}
    assert ref["macro_f1"] == pytest.approx(sum(f1.values()) / 4)
    assert ref["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.8 + 2 * 2 / 3 + 2 * 0.5) / 9)
    assert ref["confusion_matrix"] == [[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]]
    assert ref["top1_agreement"] == 1.0 and ref["max_abs_diff"] == 0.0
    # "other" calls the two dark images Pre: 7/9 agreement, one-hot rows differ by 1 in 2 entries
    assert other["top1_agreement"] == pytest.approx(7 / 9)
    assert other["max_abs_diff"] == 1.0 and other["mean_abs_diff"] == pytest.approx(4 / 36)
    assert other["accuracy"] == pytest.approx(6 / 9)  # Pre's dark now right, Pro's dark now wrong
    for row in table.rows:
        assert row["latency_p50_ms"] <= row["latency_p95_ms"] and row["throughput_ips"] > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(colour_data, fmt):
    table = compare_candidates([_candidate("ref", 3), _candidate("other", 2)],
                               load_labelled(colour_data, CLASSES), iterations=2, warmup=0)
    text = render(table, fmt)
    if fmt == "json":
        data = json.loads(text)
        assert data["reference"] == "ref" and [r["model"] for r in data["rows"]] == ["ref", "other"]
        assert data["machine"]["cpu_model"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert float(rows[1]["top1_agreement"]) == pytest.approx(7 / 9)
    else:
        assert "66.67%" in text and "77.78%" in text and "cost/sample" in text
        if fmt == "markdown":
            assert text.startswith("# Model comparison") and "| ref |" in text
            header = next(line for line in text.splitlines() if line.startswith("| model"))
            assert "max \\|dp\\|" in header  # a bare pipe would split the column
            assert len(header.replace("\\|", "").split("|")) == len(COLUMNS) + 2


def test_write_report_folder_and_file(colour_data, tmp_path):
    table = compare_candidates([_candidate("ref", 3)], load_labelled(colour_data, CLASSES),
                               iterations=2, warmup=0)
    written = write_report(table, tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names == ["comparison.csv", "comparison.json", "confusion-ref.png", "report.md"]
    assert (tmp_path / "report" / "confusion-ref.png").read_bytes()[:4] == b"\x89PNG"
    assert "![confusion matrix of ref](confusion-ref.png)" in (tmp_path / "report" / "report.md").read_text()
    only = write_report(table, tmp_path / "t.csv", "csv")
    assert [p.name for p in only] == ["t.csv"]


def test_onnx_models_and_keras_callable_reference(tiny_model_path, make_tiny_onnx, colour_data, tmp_path):
    other = make_tiny_onnx(tmp_path / "other.onnx", temperature=2.0, precision="fp16")
    labelled = load_labelled(colour_data, CLASSES)
    table = compare_models([tiny_model_path, other], labelled, keras_predict=colour_model(3),
                           iterations=2, warmup=0, provider="cpu")
    assert [r["model"] for r in table.rows] == ["keras", "tiny.onnx", "other.onnx"]
    assert [r["precision"] for r in table.rows] == ["fp32", "fp32", "fp16"]
    assert table.rows[0]["accuracy"] == pytest.approx(6 / 9)
    assert table.rows[2]["size_bytes"] == other.stat().st_size


def test_cli_compare(tiny_model_path, colour_data, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(tiny_model_path), str(tiny_model_path), "--data",
                                 str(colour_data), "--format", "json", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert rows[1]["top1_agreement"] == 1.0 and rows[1]["max_abs_diff"] == 0.0
    assert "all images" in result.stderr and "pass --split-manifest" in result.stderr
    out = runner.invoke(app, ["compare", str(tiny_model_path), "--data", str(colour_data),
                              "--out", str(tmp_path / "cmp"), "--iterations", "2"])
    assert out.exit_code == 0 and (tmp_path / "cmp" / "report.md").is_file()
    bad = runner.invoke(app, ["compare", str(tiny_model_path), "--data", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_cli_compare_usage_errors_have_one_exit_code(tiny_model_path, colour_data, tmp_path):
    """A bad model is a usage error wherever it stands in the list; --limit 0 names the flag."""
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    runner = CliRunner()
    for models in ([junk, tiny_model_path], [tiny_model_path, junk]):
        result = runner.invoke(app, ["compare", *map(str, models), "--data", str(colour_data),
                                     "--iterations", "1"])
        assert result.exit_code == 2 and "junk.onnx" in result.output, result.output
    zero = runner.invoke(app, ["compare", str(tiny_model_path), "--data", str(colour_data),
                               "--limit", "0"])
    assert zero.exit_code == 2 and "--limit" in zero.output


BENCH_KEYS = {"model", "size_bytes", "precision", "backbone", "input_size", "provider", "providers",
              "requested_provider", "fell_back", "threads", "image_source", "decoding",
              "batches", "machine", "created"}


def test_bench_json_keys(tiny_model_path, colour_data):
    result = bench_model(tiny_model_path, provider="cpu", batch_sizes=(1, 4), threads=1,
                         iterations=3, warmup=1, images=[colour_data])
    assert set(result) == BENCH_KEYS
    assert result["provider"] == "cpu" and result["threads"] == {"intra_op": 1, "inter_op": 1}
    assert [b["batch_size"] for b in result["batches"]] == [1, 4]
    assert set(result["batches"][0]) >= {"p50_ms", "p90_ms", "p99_ms", "throughput_ips"}
    assert set(result["decoding"]) == {"images", "decode_p50_ms", "size"}
    assert {"cpu_model", "usable_cpus", "cpu_flags", "onnxruntime"} <= set(result["machine"])


def test_cli_bench(tiny_model_path, tmp_path):
    runner = CliRunner()
    record = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(tiny_model_path), "--batch-sizes", "1,2",
                                 "--iterations", "2", "--format", "json", "--out", str(record)])
    assert result.exit_code == 0, result.output
    assert set(json.loads(record.read_text())) == BENCH_KEYS
    table = runner.invoke(app, ["bench", str(tiny_model_path), "--iterations", "2",
                                "--batch-sizes", "1"])
    assert table.exit_code == 0 and "p50 ms" in table.output and "machine:" in table.output
    bad = runner.invoke(app, ["bench", str(tiny_model_path), "--batch-sizes", "0"])
    assert bad.exit_code == 2 and "batch sizes must be >= 1" in bad.output


def test_cli_compare_defaults_to_the_bundled_variants(tiny_model_path, colour_data, tmp_path,
                                                      monkeypatch):
    from leukedge.runtime import models

    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    runner = CliRunner()
    none = runner.invoke(app, ["compare", "--data", str(colour_data)])
    assert none.exit_code == 2 and "bundles no model" in none.output
    for precision in ("int8", "fp32"):
        (tmp_path / f"leukedge-default-{precision}.onnx").write_bytes(tiny_model_path.read_bytes())
    both = runner.invoke(app, ["compare", "--data", str(colour_data), "--format", "csv",
                               "--iterations", "2"])
    assert both.exit_code == 0, both.output
    models_column = [row["model"] for row in csv.DictReader(io.StringIO(both.stdout))]
    assert models_column == ["leukedge-default-fp32.onnx", "leukedge-default-int8.onnx"]


def test_cli_compare_without_matplotlib_writes_the_report_without_plots(
        tiny_model_path, colour_data, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a [cpu]-only install
    result = CliRunner().invoke(app, ["compare", str(tiny_model_path), "--data", str(colour_data),
                                      "--out", str(tmp_path / "cmp"), "--iterations", "1"])
    assert result.exit_code == 0, result.output
    assert "plots not written" in result.stderr and "leukedge[train]" in result.stderr
    written = sorted(p.name for p in (tmp_path / "cmp").iterdir())
    assert written == ["comparison.csv", "comparison.json", "report.md"]
    assert "![" not in (tmp_path / "cmp" / "report.md").read_text()
    one = CliRunner().invoke(app, ["compare", str(tiny_model_path), "--data", str(colour_data),
                                   "--out", str(tmp_path / "c.json"), "--format", "json",
                                   "--iterations", "1"])
    assert one.exit_code == 0 and "plots" not in one.stderr
    assert json.loads((tmp_path / "c.json").read_text())["rows"]


def test_cli_compare_out_naming_a_model_is_refused(make_tiny_onnx, colour_data, tmp_path):
    model = make_tiny_onnx(tmp_path / "m.onnx")
    before = model.read_bytes()
    result = CliRunner().invoke(app, ["compare", str(model), "--data", str(colour_data),
                                      "--out", str(model), "--format", "json"])
    assert result.exit_code == 2 and f"--out {model} is the same file as the model" \
        in result.stderr
    assert model.read_bytes() == before


def test_compare_scores_the_held_out_split_of_the_run_beside_the_model(make_tiny_onnx,
                                                                      colour_data, tmp_path):
    """A model exported into its run folder names its split.json by sha256: compare scores
    that split's held-out images, not the training images, and says so."""
    from leukedge.modelkit.dataset import discover_dataset
    from leukedge.modelkit.splits import make_split, write_split_manifest

    dataset = discover_dataset(colour_data, classes=tuple(LAYOUT))
    manifest = make_split(dataset, 1, (0.5, 0.25, 0.25))
    sha = write_split_manifest(tmp_path / "split.json", manifest)
    model = make_tiny_onnx(tmp_path / "model.onnx", classes=tuple(LAYOUT),
                           provenance={"split_manifest_sha256": sha})
    result = CliRunner().invoke(app, ["compare", str(model), "--data", str(colour_data),
                                      "--format", "json", "--iterations", "1"])
    assert result.exit_code == 0, result.output
    n_test = len(manifest.paths("test"))
    report = json.loads(result.stdout)
    assert report["n_images"] == n_test < len(dataset.records)
    assert "test split" in report["source"]
    assert f"Scoring {n_test} images" in result.stderr and "test split of" in result.stderr
