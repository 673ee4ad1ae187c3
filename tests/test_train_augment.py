"""Augmentation and the batch source: determinism, and the model's own preprocessing graph run
after augmentation. These run without TensorFlow, except the tf.data wrapper test."""

from __future__ import annotations

import numpy as np
import pytest

from dataset_builders import synthetic_dataset, synthetic_smear
from leukedge.modelkit.dataset import discover_dataset
from leukedge.modelkit.graph.runner import PreprocessRunner
from leukedge.modelkit.splits import make_split
from leukedge.runtime.preprocessing import PreprocessSpec
from leukedge.train.augment import AugmentSpec, affine_matrix, augment, random_color
from leukedge.train.data import BatchSource, class_weights, load_images

SPEC = PreprocessSpec(input_size=(32, 32), masked_input=True)
RUNNER = PreprocessRunner(SPEC)


@pytest.fixture()
def smear() -> np.ndarray:
    return synthetic_smear(np.random.default_rng(1), size=64)


def test_augment_is_deterministic_given_a_seed(smear):
    a = augment(smear, AugmentSpec(), np.random.default_rng(5))
    b = augment(smear, AugmentSpec(), np.random.default_rng(5))
    c = augment(smear, AugmentSpec(), np.random.default_rng(6))
    assert a.dtype == np.uint8 and a.shape == smear.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_augment_leaves_input_untouched_and_can_be_disabled(smear):
    before = smear.copy()
    augment(smear, AugmentSpec(), np.random.default_rng(0))
    assert np.array_equal(smear, before)
    assert augment(smear, AugmentSpec(enabled=False), np.random.default_rng(0)) is smear


def test_identity_ranges_give_the_identity_warp():
    spec = AugmentSpec(rotation_deg=0, shift=0, shear_deg=0, zoom=0, horizontal_flip=False,
                       right_angles=False, color_jitter=False)
    matrix = affine_matrix(40, 60, spec, np.random.default_rng(0))
    assert np.allclose(matrix, [[1, 0, 0], [0, 1, 0]])
    image = synthetic_smear(np.random.default_rng(2), 40)
    assert np.array_equal(augment(image, spec, np.random.default_rng(0)), image)


def test_right_angle_turns_are_exact_and_cover_all_four(smear):
    spec = AugmentSpec(rotation_deg=0, shift=0, shear_deg=0, zoom=0, horizontal_flip=False,
                       color_jitter=False, right_angles=True)
    turns = set()
    for seed in range(24):
        out = augment(smear, spec, np.random.default_rng(seed))
        matches = [k for k in range(4) if np.array_equal(out, np.rot90(smear, k))]
        assert len(matches) == 1, "a quarter-turn augmentation must be an exact rotation"
        turns.add(matches[0])
    assert turns == {0, 1, 2, 3}


def test_right_angle_turns_keep_a_non_square_shape():
    image = synthetic_smear(np.random.default_rng(4), 40)[:, :30].copy()
    spec = AugmentSpec(rotation_deg=0, shift=0, shear_deg=0, zoom=0, horizontal_flip=False,
                       color_jitter=False, right_angles=True)
    outs = [augment(image, spec, np.random.default_rng(seed)) for seed in range(12)]
    assert all(o.shape == image.shape for o in outs)
    assert any(np.array_equal(o, image[::-1, ::-1]) for o in outs)


def test_color_jitter_stays_in_range(smear):
    spec = AugmentSpec()
    out = random_color(smear, spec, np.random.default_rng(3))
    assert out.dtype == np.uint8 and out.shape == smear.shape
    ratio = out.astype(float).mean() / smear.astype(float).mean()
    assert 0.8 < ratio < 1.2
    no_change = AugmentSpec(hue_deg=0, saturation=(1, 1), brightness=(1, 1))
    assert np.abs(random_color(smear, no_change, np.random.default_rng(0)).astype(int)
                  - smear).max() <= 1


def test_the_graph_runs_after_augmentation(smear):
    spec = AugmentSpec(hue_deg=60)  # large hue shifts move stain pixels in and out of the mask
    for seed in range(3):
        source = BatchSource([smear], [0], RUNNER, 1, 4, spec, seed=seed)
        (x, _), = list(source())
        augmented = augment(smear, spec, np.random.default_rng([seed, 0, 0]))
        expected = RUNNER(augmented[None])
        assert np.array_equal(x["image"], expected["image"])
        assert np.array_equal(x["masked_image"], expected["masked_image"])


def test_undecodable_images_are_reported_and_left_out_of_the_split(tmp_path):
    root = synthetic_dataset(tmp_path / "data", per_class=4)
    good = (root / "Pre" / "Pre_001.jpg").read_bytes()
    (root / "Pre" / "Pre_001.jpg").write_bytes(good[: len(good) // 2])  # cut short
    dataset = discover_dataset(root)
    images, records, bad = load_images(dataset, dataset.records)
    assert list(bad) == ["Pre/Pre_001.jpg"] and "truncated" in bad["Pre/Pre_001.jpg"]
    assert len(images) == len(records) == 15 and images[0].dtype == np.uint8
    manifest = make_split(dataset.without(bad))
    assert "Pre/Pre_001.jpg" not in [e["path"] for e in manifest.entries]
    assert manifest.skipped[0][0] == "Pre/Pre_001.jpg"


def test_class_weights_are_balanced():
    w = class_weights([0, 0, 0, 1, 2, 2], 4)
    assert w.tolist() == pytest.approx([6 / 12, 6 / 4, 6 / 8, 0.0])


def _source(images, **kwargs):
    labels = np.arange(len(images)) % 4
    return BatchSource(images, labels, RUNNER, batch_size=4, num_classes=4, **kwargs)


def test_batch_source_epochs_are_reproducible(smear):
    images = [np.roll(smear, i, axis=0) for i in range(10)]
    kwargs = dict(augment_spec=AugmentSpec(), shuffle=True, seed=9,
                  weights=class_weights(np.arange(10) % 4, 4))
    first, second = _source(images, **kwargs), _source(images, **kwargs)
    for _ in range(2):  # epochs 0 and 1
        a, b = list(first()), list(second())
        assert len(a) == len(first) == 3
        for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
            assert np.array_equal(xa["masked_image"], xb["masked_image"])
            assert np.array_equal(ya, yb) and np.array_equal(wa, wb)
    epoch0 = list(_source(images, **kwargs)())[0][0]["image"]
    assert not np.array_equal(epoch0, a[0][0]["image"])


def test_batch_source_without_augmentation_equals_the_deployed_preprocessing(smear):
    images = [smear, smear[::-1].copy()]
    (x, y), = list(_source(images)())
    expected = RUNNER(np.stack(images))
    assert np.array_equal(x["image"], expected["image"])
    assert np.array_equal(x["masked_image"], expected["masked_image"])
    assert y.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]


def test_images_of_several_sizes_go_through_the_graph(smear):
    images = [smear, smear[:48, :40].copy()]
    (x, _), = list(_source(images)())
    assert x["image"].shape == (2, 32, 32, 3)


@pytest.mark.slow
def test_tf_dataset_has_known_length_and_signature(smear):
    from leukedge.train.data import to_tf_dataset

    source = _source([smear] * 6, weights=np.ones(4))
    ds = to_tf_dataset(source)
    assert int(ds.cardinality()) == 2
    x, y, w = next(iter(ds))
    assert x["image"].shape == (4, 32, 32, 3) and y.shape == (4, 4) and w.shape == (4,)
