"""The one door to ONNX Runtime: providers, threads and honest errors."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from leukedge.runtime.session import (PROVIDER_CHOICES, RuntimeSetupError, create_session,
                                      default_threads, installed_ort_packages)

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_cpu_session(tiny_model_path):
    session, info = create_session(tiny_model_path, provider="cpu")
    assert info.providers == ("CPUExecutionProvider",)
    assert info.provider == "cpu" and info.requested == "cpu" and not info.fell_back
    assert [i.name for i in session.get_inputs()] == ["image"]


def test_auto_ends_with_cpu(tiny_model_path):
    _, info = create_session(tiny_model_path, provider="auto")
    assert info.providers[-1] == "CPUExecutionProvider"
    assert info.provider == ("cuda" if HAS_CUDA else "cpu")


def test_session_from_bytes(tiny_model_path):
    session, _ = create_session(tiny_model_path.read_bytes(), provider="cpu")
    assert session.get_outputs()[0].name == "probs"


def test_unknown_provider_lists_valid_ones(tiny_model_path):
    with pytest.raises(ValueError, match="Unknown provider 'tensorrt'. Valid: auto, cuda, cpu"):
        create_session(tiny_model_path, provider="tensorrt")
    assert PROVIDER_CHOICES[:3] == ("auto", "cuda", "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has a CUDA provider")
def test_explicit_cuda_on_cpu_only_onnxruntime_is_an_error(tiny_model_path):
    with pytest.raises(RuntimeSetupError, match="provider 'cuda' was requested.*leukedge\\[gpu\\]"):
        create_session(tiny_model_path, provider="cuda")


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_set_explicitly(tiny_model_path, threads):
    _, info = create_session(tiny_model_path, provider="cpu", threads=threads)
    assert info.intra_op_threads == threads and info.inter_op_threads == 1


def test_default_threads_and_bad_threads(tiny_model_path):
    _, info = create_session(tiny_model_path, provider="cpu")
    assert info.intra_op_threads == default_threads() >= 1
    with pytest.raises(ValueError, match="--threads must be between 1 and 256"):
        create_session(tiny_model_path, provider="cpu", threads=0)
    with pytest.raises(ValueError, match="--threads must be between 1 and 256"):
        create_session(tiny_model_path, provider="cpu", threads=100_000)


def test_missing_and_corrupt_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        create_session(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage" * 20)
    with pytest.raises(RuntimeSetupError, match=r"junk\.onnx: ONNX Runtime cannot load this model"):
        create_session(junk)


def test_exactly_one_onnxruntime_distribution_is_installed():
    assert len(installed_ort_packages()) == 1, installed_ort_packages()
