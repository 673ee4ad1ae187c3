"""Bundled model names: the precision-free name picks INT8 only where its kernels are exact."""

from __future__ import annotations

import warnings

import pytest

from leukedge.runtime import models
from leukedge.runtime.models import ModelNotFoundError, bundled_models, resolve_model


@pytest.fixture()
def shelf(tmp_path, monkeypatch):
    for name in ("default-int8", "default-fp32", "fast-int8"):
        (tmp_path / f"leukedge-{name}.onnx").write_bytes(b"x")
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    return tmp_path


@pytest.mark.parametrize("vnni, expected", [(True, "default-int8"), (None, "default-fp32"),
                                            (False, "default-fp32")])
def test_default_picks_int8_on_vnni_cpus_only(shelf, monkeypatch, vnni, expected):
    monkeypatch.setattr(models, "has_int8_vnni", lambda: vnni)
    assert resolve_model(None).name == f"leukedge-{expected}.onnx"
    assert resolve_model("default").name == f"leukedge-{expected}.onnx"


@pytest.mark.parametrize("vnni, expected", [(True, "default-int8"), (False, "default-int8-avx2"),
                                            (None, "default-fp32")])
def test_avx2_int8_is_picked_on_x86_without_vnni(shelf, monkeypatch, vnni, expected):
    (shelf / "leukedge-default-int8-avx2.onnx").write_bytes(b"x")
    monkeypatch.setattr(models, "has_int8_vnni", lambda: vnni)
    assert resolve_model("default").name == f"leukedge-{expected}.onnx"
    assert resolve_model("default-int8-avx2").name == "leukedge-default-int8-avx2.onnx"
    assert models._names(bundled_models())[:2] == ["default", "fast"]  # one alias each


def test_a_lone_avx2_file_is_used_on_any_cpu(tmp_path, monkeypatch):
    (tmp_path / "leukedge-tiny-int8-avx2.onnx").write_bytes(b"x")
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    for vnni in (True, False, None):
        monkeypatch.setattr(models, "has_int8_vnni", lambda: vnni)
        assert resolve_model("tiny").name == "leukedge-tiny-int8-avx2.onnx"


def test_explicit_names_and_a_model_without_fp32(shelf, monkeypatch):
    monkeypatch.setattr(models, "has_int8_vnni", lambda: False)
    assert resolve_model("default-int8").name == "leukedge-default-int8.onnx"
    assert resolve_model("fast").name == "leukedge-fast-int8.onnx"  # nothing else to pick
    assert list(bundled_models()) == ["default-fp32", "default-int8", "fast-int8"]
    with pytest.raises(ModelNotFoundError, match="bundled: default, fast, default-fp32"):
        resolve_model("slow")


def test_full_range_int8_warns_on_a_cpu_without_vnni(make_tiny_onnx, tmp_path, monkeypatch):
    from leukedge.runtime import classifier

    path = make_tiny_onnx(tmp_path / "q.onnx", precision="int8",
                          quantization={"method": "static", "reduce_range": False})
    monkeypatch.setattr(classifier, "has_int8_vnni", lambda: False)
    with pytest.warns(classifier.Int8SaturationWarning, match="without VNNI"):
        classifier.Classifier(path, provider="cpu")
    monkeypatch.setattr(classifier, "has_int8_vnni", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier.Classifier(path, provider="cpu")


def test_vnni_detection_reads_this_cpu():
    from leukedge.runtime.cpu import has_int8_vnni

    assert has_int8_vnni() in (True, False, None)


@pytest.mark.parametrize("machine, flags, numpy_table, expected", [
    ("x86_64", "fpu avx2 avx512_vnni", None, True),           # Linux, /proc/cpuinfo
    ("x86_64", "fpu avx2 avx_vnni", None, True),
    ("x86_64", "fpu avx2 fma", None, False),
    ("AMD64", None, {"AVX2": True, "AVX512VNNI": True}, True),  # Windows: numpy 2's table
    ("AMD64", None, {"AVX2": True, "AVX512VNNI": False}, False),
    ("AMD64", None, "numpy 1.x", None),                       # no np._core: unknown
    ("arm64", None, {"ASIMD": True}, None),                    # not x86: unknown
    ("aarch64", "fp asimd", None, None),
])
def test_every_cpu_answer_picks_a_file_exact_on_that_cpu(shelf, monkeypatch, machine, flags,
                                                          numpy_table, expected):
    """Each way the CPU is told (or not) -> VNNI yes / no / unknown -> the file `default` means:
    INT8 with VNNI, the AVX2 file on other x86 CPUs, FP32 where the CPU is unknown."""
    import sys
    import types

    from leukedge.runtime import cpu

    (shelf / "leukedge-default-int8-avx2.onnx").write_bytes(b"x")
    monkeypatch.setattr(cpu.platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu, "cpuinfo", lambda: {"flags": flags} if flags else {})
    if numpy_table is not None:  # the numpy that has_int8_vnni imports
        core = types.SimpleNamespace(_multiarray_umath=types.SimpleNamespace(
            __cpu_features__=numpy_table))
        fake = types.SimpleNamespace() if numpy_table == "numpy 1.x" else \
            types.SimpleNamespace(_core=core)
        monkeypatch.setitem(sys.modules, "numpy", fake)
    cpu.has_int8_vnni.cache_clear()
    try:
        assert cpu.has_int8_vnni() is expected
        monkeypatch.setattr(models, "has_int8_vnni", cpu.has_int8_vnni)
        want = {True: "default-int8", False: "default-int8-avx2", None: "default-fp32"}[expected]
        assert resolve_model("default").name == f"leukedge-{want}.onnx"
    finally:
        cpu.has_int8_vnni.cache_clear()


@pytest.mark.parametrize("vnni, present, expected", [
    (True, ("model.onnx", "model-int8.onnx", "model-int8-avx2.onnx"), "model-int8.onnx"),
    (False, ("model.onnx", "model-int8.onnx", "model-int8-avx2.onnx"), "model-int8-avx2.onnx"),
    (None, ("model.onnx", "model-int8.onnx", "model-int8-avx2.onnx"), "model.onnx"),
    (False, ("model.onnx", "model-int8.onnx"), "model.onnx"),
    (True, ("model.onnx",), "model.onnx"),
])
def test_a_run_folder_means_the_file_this_cpu_runs_exactly(tmp_path, monkeypatch, vnni,
                                                           present, expected):
    """`-m RUN_DIR` (leukedge adapt's or train's output) picks as the bundled names do."""
    for name in present:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(models, "has_int8_vnni", lambda: vnni)
    assert resolve_model(tmp_path) == tmp_path / expected
    assert resolve_model(str(tmp_path) + "/") == tmp_path / expected


def test_a_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="a folder without model.onnx"):
        resolve_model(tmp_path)
