"""`leukedge export --triton`: a model repository whose config Triton's own schema accepts."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.export.triton import model_name, triton_config, write_triton_repository
from leukedge.runtime.contract import read_contract


def _parse(text: str):
    model_config_pb2 = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] ([dev]) has the schema")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_config_parses_with_tritons_schema(tiny_model_path):
    config = _parse(triton_config("tiny", read_contract(tiny_model_path)))
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
    (image,) = config.input
    assert image.name == "image" and list(image.dims) == [-1, -1, 3]
    assert config.input[0].data_type == 2  # TYPE_UINT8
    outputs = {o.name: o for o in config.output}
    assert set(outputs) == {"probs", "ood_score", "stain_fraction", "stain_coverage", "contrast",
                            "stain_mask"}
    assert list(outputs["probs"].dims) == [4] and outputs["probs"].label_filename == "labels.txt"
    assert list(outputs["ood_score"].dims) == [1] and list(outputs["ood_score"].reshape.shape) == []
    assert list(outputs["stain_mask"].dims) == [32, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0


def test_repository_layout_and_replacement(tiny_model_path, tmp_path):
    folder = write_triton_repository(tiny_model_path, tmp_path / "repo", name="leukedge_default")
    assert (folder / "1" / "model.onnx").read_bytes() == tiny_model_path.read_bytes()
    assert (folder / "labels.txt").read_text().split() == ["Benign", "Early", "Pre", "Pro"]
    _parse((folder / "config.pbtxt").read_text())
    again = write_triton_repository(tiny_model_path, tmp_path / "repo", name="leukedge_default")
    assert again == folder and sorted(p.name for p in (tmp_path / "repo").iterdir()) == [
        "leukedge_default"]
    with pytest.raises(ValueError, match="letters, digits"):
        write_triton_repository(tiny_model_path, tmp_path / "repo", name="bad name")
    assert model_name("runs/a/leukedge-default-int8.onnx") == "leukedge-default-int8"


def test_the_repository_model_runs_as_triton_would_feed_it(tiny_model_path, tmp_path):
    import onnxruntime as ort

    folder = write_triton_repository(tiny_model_path, tmp_path / "repo")
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    probs, score = session.run(["probs", "ood_score"], {"image": batch})
    assert probs.shape == (3, 4) and score.shape == (3,)
