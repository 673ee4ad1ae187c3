"""The backbone registry and the hybrid model: tiny builds, names, sizes, custom layers."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.train import (BACKBONES, HybridConfig, backbone_names, build_hybrid, build_parts,
                            count_parameters, flatten_parameter_count, get_backbone, seg_map_shape)
from leukedge.modelkit.backbones import resolve_weights

LIGHT = [row.name for row in BACKBONES if row.light and row.kind != "classical"]  # Keras rows
HEAVY_BUILT = ["densenet201", "vgg16", "convnext_tiny"]  # convnext_base: same code, 88 M params


def _inputs(size: int, batch: int = 2, hybrid: bool = True):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32) / 255
    masked = image * (rng.random((batch, size, size, 1)) > 0.5)
    return {"image": image, "masked_image": masked} if hybrid else {"image": image}


# --------------------------------------------------------------------------- registry (no TF)

def test_registry_lookup_and_error_lists_valid_names():
    assert backbone_names() == ("efficientnet_lite0", "efficientnet_lite1", "densenet201",
                                "convnext_tiny", "convnext_base", "vgg16", "mobilenet_v3_small",
                                "efficientnet_b0", "small_cnn", "svm", "xgboost")
    assert get_backbone("densenet201").frozen_layers == 500
    assert get_backbone("convnext_tiny").frozen_layers == 100
    with pytest.raises(ValueError, match="Unknown backbone 'densnet'. Valid: efficientnet_lite0, "
                                         ".*small_cnn, svm, xgboost"):
        get_backbone("densnet")


def test_rows_declare_their_normalisation():
    for name in ("convnext_tiny", "convnext_base", "efficientnet_b0", "mobilenet_v3_small"):
        assert get_backbone(name).mean == (0.0, 0.0, 0.0) and get_backbone(name).std == (1.0,) * 3
    assert get_backbone("small_cnn").std == (255.0,) * 3
    assert get_backbone("efficientnet_lite0").mean == (127.0,) * 3
    assert get_backbone("efficientnet_lite0").std == (128.0,) * 3
    assert get_backbone("densenet201").std[0] == pytest.approx(0.229 * 255)
    assert get_backbone("vgg16").channel_order == "BGR"
    spec = HybridConfig.resolve("vgg16", input_size=(32, 32)).preprocess_spec()
    assert spec.channel_order == "BGR" and spec.masked_input


def test_weights_argument(tmp_path):
    row = get_backbone("densenet201")
    assert resolve_weights(row, None) is None and resolve_weights(row, "none") is None
    assert resolve_weights(row, "imagenet") == "imagenet"
    with pytest.raises(ValueError, match="no ImageNet weights"):
        resolve_weights(get_backbone("small_cnn"), "imagenet")
    with pytest.raises(ValueError, match="--weights .* neither 'imagenet', 'none' nor an "
                                         "existing file"):
        resolve_weights(row, tmp_path / "missing.h5")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a weights file for densenet201"):
        resolve_weights(row, tmp_path / "w.bin")
    (tmp_path / "w.pth").write_bytes(b"x")
    assert resolve_weights(get_backbone("efficientnet_lite0"), tmp_path / "w.pth")


def test_config_resolution_and_checks():
    config = HybridConfig.resolve("small_cnn")
    assert config.input_size == (128, 128) and config.head_units == (256, 128)
    assert HybridConfig.resolve("densenet201").head_units == (512, 256, 128)
    assert HybridConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown seg_features 'pool'. Valid: gap, flatten"):
        HybridConfig.resolve("small_cnn", seg_features="pool")
    with pytest.raises(ValueError, match="divisible by 8"):
        HybridConfig.resolve("small_cnn", input_size=(100, 100))


def test_reference_seg_map_arithmetic():
    assert seg_map_shape((224, 224)) == (56, 56, 128)  # the reference study's 401,408 flatten features
    assert np.prod(seg_map_shape((224, 224))) == 401_408
    assert seg_map_shape((128, 128), seg_width=0.5) == (32, 32, 64)


# --------------------------------------------------------------------------- Keras builds

@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT)
def test_light_rows_build_tiny_hybrids(name):
    model = build_hybrid(name, input_size=(32, 32), seg_width=0.25, seg_features="gap")
    assert [t.name for t in model.inputs] == ["image", "masked_image"]
    assert model.get_layer("logits").output.shape[-1] == 4
    assert model.get_layer("features") is not None
    logits = np.asarray(model(_inputs(32), training=False))
    assert logits.shape == (2, 4) and np.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY_BUILT)
def test_heavy_rows_build_at_32(name):
    model = build_hybrid(name, input_size=(32, 32), seg_width=0.25, head_units=(16,),
                         seg_features="gap")
    logits = np.asarray(model(_inputs(32, batch=1), training=False))
    assert logits.shape == (1, 4) and np.isfinite(logits).all()


@pytest.mark.slow
def test_lite_parts_share_their_layers_with_the_full_model():
    config = HybridConfig.resolve("efficientnet_lite0", input_size=(64, 64), seg_features="none")
    parts = build_parts(config, None, fine_tune_from=8)
    x = _inputs(64, hybrid=False)
    cut = parts.lower(x["image"], training=False)
    assert tuple(cut.shape[1:]) == parts.backbone.cut_shape((64, 64), 8) == (4, 4, 80)
    np.testing.assert_allclose(np.asarray(parts.upper({"cut": cut}, training=False)),
                               np.asarray(parts.full(x, training=False)), atol=1e-5)
    assert {w.path for w in parts.upper.weights} <= {w.path for w in parts.full.weights}


@pytest.mark.slow
def test_flatten_parameter_arithmetic_matches_a_build():
    config = HybridConfig.resolve("small_cnn", input_size=(64, 64), seg_width=0.25)
    gap = build_hybrid(config)
    flat = build_hybrid(config, seg_features="flatten")
    assert count_parameters(flat)["total"] == flatten_parameter_count(gap, config)
    branch = gap.get_layer("segmentation_branch")
    assert branch.get_layer("seg_gap") is not None
    with pytest.raises(ValueError, match="gap variant"):
        flatten_parameter_count(flat, HybridConfig.from_dict({**config.to_dict(),
                                                              "seg_features": "flatten"}))


@pytest.mark.slow
def test_save_and_load_roundtrip_is_identical(tmp_path):
    from leukedge.train import load_model

    model = build_hybrid("small_cnn", input_size=(32, 32), seg_width=0.25, head_units=(8,),
                         seg_features="gap")
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_model(path)
    x = _inputs(32)
    assert np.array_equal(np.asarray(model(x, training=False)), np.asarray(again(x, training=False)))
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nothing.keras")


@pytest.mark.slow
def test_custom_layers_compute_what_they_say():
    import math

    from leukedge.train.layers import ErfGelu, InputNormalization

    x = np.linspace(-4, 4, 9, dtype=np.float32).reshape(1, 1, 3, 3)
    gelu = np.asarray(ErfGelu()(x))
    expected = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    assert np.allclose(gelu, expected, atol=1e-6)
    norm = InputNormalization((1.0, 2.0, 3.0), (1.0, 1.0, 2.0))
    out = np.asarray(norm(x))
    assert np.allclose(out[..., 0], x[..., 0] - 1) and np.allclose(out[..., 2], (x[..., 2] - 3) / 2)
    legacy = {**norm.get_config(), "multiplier": 1.0, "bgr": False}  # saved before 0.3
    assert np.allclose(np.asarray(InputNormalization.from_config(legacy)(x)), out)
    with pytest.raises(ValueError, match="no longer supported"):
        InputNormalization.from_config({**legacy, "bgr": True})


# --------------------------------------------------------------------------- tf2onnx-convertible layers

def _unconvertible_toy():
    """A model with the three layer kinds tf2onnx cannot convert (as in ConvNeXt/EfficientNet)."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Normalization(mean=[100.0, 110.0, 120.0], variance=[400.0, 500.0, 900.0])(inputs)
    x = keras.layers.Conv2D(6, 1, name="pointwise")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", groups=6, name="dw")(x)
    x = keras.layers.Activation("gelu", name="act")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.mark.slow
def test_rewrite_keeps_outputs_and_converts_with_tf2onnx():
    import keras
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from leukedge.train.convertible import make_convertible
    from leukedge.train.layers import ErfGelu, InputNormalization

    model = _unconvertible_toy()
    rewritten = make_convertible(model)
    kinds = {type(l) for l in rewritten.layers}
    assert {keras.layers.DepthwiseConv2D, ErfGelu, InputNormalization} <= kinds
    assert keras.layers.Normalization not in kinds
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    reference = np.asarray(model(x))
    assert np.allclose(np.asarray(rewritten(x)), reference, atol=1e-5)
    spec = [tf.TensorSpec((None, 16, 16, 3), tf.float32, name="x")]
    proto, _ = tf2onnx.convert.from_function(tf.function(lambda t: rewritten(t), input_signature=spec),
                                             input_signature=spec, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]  # no captured tensors as inputs
    assert np.abs(session.run(None, {"x": x})[0] - reference).max() < 1e-4


@pytest.mark.slow
def test_convnext_backbone_is_rewritten_without_changing_outputs():
    import keras

    from leukedge.train.convertible import make_convertible

    original = keras.applications.ConvNeXtTiny(include_top=False, weights=None,
                                               input_shape=(32, 32, 3))
    rewritten = make_convertible(original)
    assert not [l for l in rewritten.layers if isinstance(l, keras.layers.Conv2D) and l.groups > 1]
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    assert np.abs(np.asarray(original(x)) - np.asarray(rewritten(x))).max() < 1e-4
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert make_convertible(vgg) is vgg  # nothing to rewrite
