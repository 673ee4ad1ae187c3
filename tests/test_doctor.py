"""`leukedge doctor`: a healthy install passes; a modified bundled model, conflicting ONNX
Runtime wheels and an unwritable folder fail (exit 1) with the reason."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

import leukedge.runtime.doctor as doctor
from leukedge.cli.main import app


def _run(*args):
    return CliRunner().invoke(app, ["doctor", *map(str, args)])


def test_a_healthy_install_passes_with_every_check_named(tmp_path):
    result = _run("--output-dir", tmp_path, "-f", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert {"python", "leukedge", "onnxruntime", "cpu starts", "default model",
            "model default-int8", "output folder writable"} <= set(checks)
    assert all(c["status"] != "fail" for c in checks.values())


def test_a_modified_bundled_model_is_named(tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(doctor.MODELS_DIR, models)
    (models / "leukedge-fast-fp32.onnx").write_bytes(b"tampered")
    monkeypatch.setattr(doctor, "SHA256SUMS", models / "SHA256SUMS")
    monkeypatch.setattr(doctor, "bundled_models",
                        lambda: {"fast-fp32": models / "leukedge-fast-fp32.onnx"})
    checks = doctor.check_bundled_models()
    recorded = len((models / "SHA256SUMS").read_text().split("\n")) - 1
    assert [c.status for c in checks] == ["fail"] * recorded  # modified + the others not there
    assert "leukedge-fast-fp32.onnx was modified" in checks[0].detail


def test_conflicting_onnxruntime_wheels_fail(monkeypatch):
    monkeypatch.setattr(doctor, "_installed", lambda name: {
        "onnxruntime": "1.20", "onnxruntime-gpu": "1.20"}.get(name))
    ort = [c for c in doctor.check_versions() if c.name == "onnxruntime"][0]
    assert ort.status == "fail" and "conflicting wheels" in ort.detail


def test_a_missing_output_folder_fails(tmp_path):
    result = _run("--output-dir", tmp_path / "nope")
    assert result.exit_code == 1 and "output folder writable" in result.stdout


def test_the_default_model_line_says_why_for_each_cpu(monkeypatch):
    """With VNNI the INT8 file, without it the AVX2 file, unknown CPUs FP32: each named with
    its reason (the bundled files, as shipped)."""
    import leukedge.runtime.models as models

    seen = {}
    for vnni in (True, False, None):
        monkeypatch.setattr(doctor, "has_int8_vnni", lambda: vnni)
        monkeypatch.setattr(models, "has_int8_vnni", lambda: vnni)
        line = [c for c in doctor.check_cpu() if c.name == "default model"][0]
        assert line.status == "ok"
        seen[vnni] = line.detail
    assert seen[True] == "leukedge-default-int8.onnx: INT8 (this CPU has VNNI)"
    assert seen[False].startswith("leukedge-default-int8-avx2.onnx: INT8 made for CPUs "
                                  "without VNNI")
    assert seen[None] == "leukedge-default-fp32.onnx: FP32 (INT8 exactness unknown on this CPU)"


def test_the_table_fits_80_columns(tmp_path, monkeypatch):
    """Details wrap under their column (a path longer than the line would stay whole)."""
    monkeypatch.chdir(tmp_path)
    result = _run()
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
