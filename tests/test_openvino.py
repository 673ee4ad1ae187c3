"""`--provider openvino:<device>`: resolution, refusals that name the problem (never a silent
fallback), and, where onnxruntime-openvino is installed, the same labels as the CPU provider."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import leukedge.runtime.doctor as doctor
import leukedge.runtime.session as session
from leukedge.cli.main import app
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.session import (PROVIDER_CHOICES, RuntimeSetupError, create_session,
                                      openvino_device)

OV = "OpenVINOExecutionProvider"
HAS_OPENVINO = OV in ort.get_available_providers()


@pytest.mark.parametrize("provider, device", [
    ("openvino", "CPU"), ("openvino:CPU", "CPU"), ("openvino:GPU", "GPU"),
    ("OpenVINO:npu", "NPU"), ("cpu", None), ("cuda", None), ("auto", None)])
def test_a_provider_names_its_openvino_device(provider, device):
    assert openvino_device(provider) == device


def test_every_device_is_a_choice_and_others_are_refused(tiny_model_path):
    assert {"openvino", "openvino:CPU", "openvino:GPU", "openvino:NPU"} <= set(PROVIDER_CHOICES)
    with pytest.raises(ValueError, match="Unknown provider 'openvino:TPU'. Valid: auto, cuda, "
                                         "cpu, openvino, openvino:CPU"):
        create_session(tiny_model_path, provider="openvino:TPU")


@pytest.mark.skipif(HAS_OPENVINO, reason="this onnxruntime has the OpenVINO provider")
def test_openvino_without_onnxruntime_openvino_is_an_error(tiny_model_path):
    with pytest.raises(RuntimeSetupError, match=r"provider 'openvino:GPU' was requested but this "
                                                r"onnxruntime has no OpenVINOExecutionProvider.*"
                                                r"pip install 'leukedge\[openvino\]'"):
        create_session(tiny_model_path, provider="openvino:GPU")


def fake_openvino(monkeypatch, devices, runs_on):
    """An onnxruntime that lists the OpenVINO provider with ``devices`` and whose sessions
    really run on ``runs_on`` (the CPU provider, as onnxruntime-openvino 1.24 does when the
    device fails to open)."""
    real = ort.InferenceSession

    def make(model, sess_options=None, providers=None):
        made = real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])
        return SimpleNamespace(get_providers=lambda: runs_on, asked=providers, real=made)

    fake = SimpleNamespace(
        get_available_providers=lambda: [OV, "CPUExecutionProvider"],
        capi=SimpleNamespace(_pybind_state=SimpleNamespace(
            get_available_openvino_device_ids=lambda: devices)),
        SessionOptions=ort.SessionOptions, ExecutionMode=ort.ExecutionMode,
        GraphOptimizationLevel=ort.GraphOptimizationLevel, InferenceSession=make)
    monkeypatch.setattr(session, "load_onnxruntime", lambda: fake)
    return fake


def test_a_device_openvino_does_not_see_is_refused_before_loading(tiny_model_path, monkeypatch):
    fake_openvino(monkeypatch, ["CPU"], ["CPUExecutionProvider"])
    with pytest.raises(RuntimeSetupError, match=r"'openvino:NPU' was requested but OpenVINO sees "
                                                r"no NPU on this PC \(devices: CPU\)"):
        create_session(tiny_model_path, provider="openvino:NPU")


def test_a_session_that_fell_back_to_the_cpu_is_an_error(tiny_model_path, monkeypatch):
    fake_openvino(monkeypatch, ["CPU", "GPU.0"], ["CPUExecutionProvider"])
    with pytest.raises(RuntimeSetupError, match="OpenVINO on GPU was requested but ONNX Runtime "
                                                "is running on CPUExecutionProvider"):
        create_session(tiny_model_path, provider="openvino:GPU")


def test_the_session_asks_for_the_device_with_explicit_threads(tiny_model_path, monkeypatch):
    fake_openvino(monkeypatch, ["CPU"], [OV, "CPUExecutionProvider"])
    made, info = create_session(tiny_model_path, provider="openvino", threads=1)
    assert made.asked == [(OV, {"device_type": "CPU", "num_of_threads": "1"}),
                          "CPUExecutionProvider"]
    assert info.provider == "openvino:CPU" and not info.fell_back


@pytest.mark.skipif(HAS_OPENVINO, reason="this onnxruntime has the OpenVINO provider")
def test_cli_refuses_openvino_with_the_install_hint(tiny_model_path, sample_images):
    result = CliRunner().invoke(app, ["infer", str(sample_images[0]), "-m", str(tiny_model_path),
                                      "--provider", "openvino:gpu"])  # any case
    assert result.exit_code == 2
    assert "no OpenVINOExecutionProvider" in result.stderr and "[openvino]" in result.stderr


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs onnxruntime-openvino (leukedge[openvino])")
@pytest.mark.parametrize("model", ["fast-fp32", "tiny"])
def test_openvino_cpu_gives_the_cpu_providers_labels(model, tiny_model_path, sample_images):
    path = tiny_model_path if model == "tiny" else model
    cpu = Classifier(path, provider="cpu").predict_batch(sample_images)
    openvino = Classifier(path, provider="openvino:CPU")
    assert openvino.session_info.providers[0] == OV
    got = openvino.predict_batch(sample_images)
    assert [p.label for p in got] == [p.label for p in cpu]
    worst = max(abs(a.probabilities[c] - b.probabilities[c])
                for a, b in zip(got, cpu) for c in a.probabilities)
    assert worst < 1e-3


def test_doctor_lists_openvinos_devices_and_which_really_run(tiny_model_path, monkeypatch):
    fake = fake_openvino(monkeypatch, ["CPU", "GPU.0"], ["CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    checks = {c.name: c for c in doctor.check_providers(tiny_model_path)}
    assert checks["openvino devices"].detail == "CPU, GPU.0"
    for device in ("CPU", "GPU"):  # the fake runs everything on the CPU provider: both warn
        started = checks[f"openvino:{device} starts"]
        assert started.status == "warn" and "is running on CPUExecutionProvider" in started.detail
        assert checks[f"openvino:{device} runs default"].status == "warn"
    assert checks["cpu starts"].status == "ok"
