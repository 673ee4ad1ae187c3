"""The ``heatmap`` output: built in standard ONNX ops, the predicted class's Grad-CAM, high where
a planted patch drives the prediction, kept by quantization, carried by ensembles, added to a
file written without it, read by the Classifier."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cnn_builders import SIZE, make_tiny_cnn, patch_image, reference_heatmap, tiny_cnn_network
from leukedge.modelkit.graph.compose import compose_model
from leukedge.modelkit.graph.heatmap import (HEATMAP, HeatmapError, add_heatmap, has_heatmap,
                                             remove_heatmap)
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.contract import read_contract

from cnn_builders import SPEC


def _run(path_or_proto, pixels: np.ndarray, names=("probs", HEATMAP)) -> list[np.ndarray]:
    data = (path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto)
            else str(path_or_proto))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(list(names), {"image": pixels})


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return make_tiny_cnn(tmp_path_factory.mktemp("cnn") / "cnn.onnx")


def test_the_map_is_high_where_the_planted_patch_is(cnn):
    pixels = np.stack([patch_image(8, 20), patch_image(20, 4), patch_image(4, 4, (0, 0, 255))])
    probs, heatmap = _run(cnn, pixels)
    assert probs.argmax(1).tolist() == [2, 2, 3]  # red, red, blue
    assert heatmap.shape == (3, 8, 8) and heatmap.dtype == np.float32
    for image, (r, c) in zip(heatmap, [(2, 5), (5, 1), (1, 1)]):  # the 2 x 2 cells covered
        inside = np.zeros((8, 8), bool)
        inside[r:r + 2, c:c + 2] = True
        assert image[inside].min() > 0.99 and image[~inside].max() < 0.01


def test_the_map_is_the_predicted_class_grad_cam(cnn):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:3, 4:20, 8:24] = (250, 20, 30)  # some red, so the hidden layer's masks differ
    heatmap = _run(cnn, pixels)[1]
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    np.testing.assert_allclose(heatmap, reference_heatmap(pixels), atol=1e-4)


def test_a_constant_map_gives_zeros(cnn):
    heatmap = _run(cnn, np.full((2, 48, 40, 3), 128, np.uint8))[1]  # any size: resized inside
    assert heatmap.shape == (2, 8, 8) and not heatmap.any()


def test_a_batch_row_equals_the_single_image(cnn):
    pixels = np.stack([patch_image(8, 20), patch_image(0, 0, (0, 255, 0))])
    together = _run(cnn, pixels)[1]
    np.testing.assert_allclose(together[1], _run(cnn, pixels[1:])[1][0], atol=1e-6)


def test_a_network_without_a_pooled_map_has_none():
    with pytest.raises(HeatmapError, match="ReduceMax"):
        compose_model(tiny_cnn_network(pool="max"), SPEC, heatmap=True)
    plain = compose_model(tiny_cnn_network(pool="max"), SPEC)
    assert not has_heatmap(plain)


def test_added_to_a_model_without_it_and_removed_again(tmp_path):
    plain = onnx.load(str(make_tiny_cnn(tmp_path / "plain.onnx", heatmap=False)))
    assert not has_heatmap(plain)
    added = add_heatmap(plain)
    pixels = np.stack([patch_image(8, 20)])
    np.testing.assert_allclose(_run(added, pixels)[1], reference_heatmap(pixels), atol=1e-4)
    np.testing.assert_array_equal(_run(added, pixels)[0], _run(plain, pixels, ["probs"])[0])
    stripped = remove_heatmap(added)
    assert [o.name for o in stripped.graph.output] == [o.name for o in plain.graph.output]
    assert len(stripped.graph.node) == len(plain.graph.node)
    assert len(stripped.graph.initializer) == len(plain.graph.initializer)


def test_the_classifier_gives_the_map_and_none_without_it(cnn, tiny_model_path):
    clf = Classifier(cnn, provider="cpu")
    prediction = clf.predict(patch_image(8, 20))
    assert prediction.label == "Pre" and prediction.heatmap.shape == (8, 8)
    assert HEATMAP not in prediction.input_checks and HEATMAP not in prediction.to_dict()
    assert prediction == clf.predict(patch_image(8, 20))  # the array takes no part in ==
    assert Classifier(tiny_model_path, provider="cpu").predict(
        patch_image(8, 20)).heatmap is None
    assert HEATMAP in [o["name"] for o in read_contract(cnn).to_dict()["outputs"]]


@pytest.mark.parametrize("method", ["static", "fp16"])
def test_quantized_children_keep_the_map(cnn, method, tmp_path):
    import cv2

    from leukedge.export import QuantizeOptions, quantize_model

    pixels = np.stack([patch_image(8, 20), patch_image(20, 4, (0, 0, 255)),
                       patch_image(2, 2, (0, 255, 0))])
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, image in enumerate(pixels):
        cv2.imwrite(str(calib / f"{i}.png"), image[:, :, ::-1])
    out = tmp_path / f"cnn-{method}.onnx"
    quantize_model(cnn, out, QuantizeOptions(method, tuple(sorted(calib.iterdir()))))
    assert HEATMAP in read_contract(out).outputs
    child = onnx.load(str(out))
    assert not any(n.name.startswith("heatmap/") and "QuantizeLinear" in n.op_type
                   for n in child.graph.node)
    heatmap = _run(child, pixels)[1]
    assert heatmap.shape == (3, 8, 8)
    np.testing.assert_allclose(heatmap, _run(cnn, pixels)[1], atol=0.05)


def test_an_ensemble_carries_its_cnn_members_map(cnn, tmp_path):
    from leukedge.modelkit.graph.ensemble import compose_ensemble

    other = compose_model(tiny_cnn_network(pool="max"), SPEC)  # no feature map to explain
    joined = compose_ensemble([other, onnx.load(str(cnn))], [0.3, 0.7])
    assert [o.name for o in joined.graph.output][-1] == HEATMAP
    pixels = np.stack([patch_image(8, 20), patch_image(20, 4, (0, 0, 255))])
    probs, heatmap = _run(joined, pixels)
    np.testing.assert_allclose(heatmap, _run(cnn, pixels)[1], atol=1e-6)
    neither = compose_ensemble([other, other], [0.5, 0.5])
    assert not has_heatmap(neither)


def test_an_ensembles_map_is_of_the_class_the_ensemble_predicts(cnn):
    """The CNN says red (class 2); a heavier member says otherwise: the map explains the
    ensemble's answer, the CNN's evidence for that class."""
    from leukedge.modelkit.graph.ensemble import compose_ensemble

    other = compose_model(tiny_cnn_network(pool="max", prefer=0), SPEC)  # always grey
    joined = compose_ensemble([onnx.load(str(cnn)), other], [0.4, 0.6])
    pixels = np.stack([patch_image(8, 20)])
    probs, heatmap = _run(joined, pixels)
    cnn_probs, cnn_map = _run(cnn, pixels)
    assert probs.argmax() != cnn_probs.argmax()
    assert not np.allclose(heatmap, cnn_map, atol=1e-3)
    assert heatmap.shape == cnn_map.shape and 0 <= heatmap.min() and heatmap.max() <= 1


def test_the_script_adds_the_map_to_an_older_file_and_keeps_every_output(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "add_heatmap.py"
    spec = importlib.util.spec_from_file_location("add_heatmap_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old = make_tiny_cnn(tmp_path / "old.onnx", heatmap=False)
    out = tmp_path / "new.onnx"
    assert module.main([str(old), str(out)]) == 0
    assert read_contract(out).outputs[-1] == HEATMAP
    assert read_contract(out).provenance["heatmap_added"]["from_sha256"]
    pixels = np.stack([patch_image(8, 20)])
    np.testing.assert_allclose(_run(out, pixels)[1], reference_heatmap(pixels), atol=1e-4)
    assert module.main([str(old), str(out)]) == 2  # exists: not overwritten
    assert module.main([str(out), str(tmp_path / "again.onnx")]) == 2  # has one already
