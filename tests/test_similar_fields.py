"""Similar-field groups for cross-validation: duplicates stay together, classes never mix, no
group passes its cap, and similar fields (one slide's stain) join before different ones."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dataset_builders import synthetic_smear
from leukedge.modelkit.similar_fields import field_descriptor, similar_field_groups


def _tinted(image: np.ndarray, tint) -> np.ndarray:
    return np.clip(image.astype(int) + np.array(tint), 0, 255).astype(np.uint8)


def _images():
    rng = np.random.default_rng(0)
    slides = [(-40, 0, 30), (30, -20, -30)]  # two stain batches
    images, paths, labels = [], [], []
    for label in (0, 1):
        for s, tint in enumerate(slides):
            for k in range(6):
                images.append(_tinted(synthetic_smear(rng, 48), tint))
                paths.append(f"{label}/slide{s}_{k}.jpg")
                labels.append(label)
    return images, paths, labels


def test_groups_follow_the_slide_and_respect_class_and_cap():
    images, paths, labels = _images()
    dup = {p: p for p in paths}
    dup[paths[1]] = paths[0]  # a duplicate pair
    groups = similar_field_groups(images, paths, labels, dup, max_share=0.5)  # cap 6 of 12
    assert groups[paths[1]] == groups[paths[0]]
    sizes = Counter(groups.values())
    assert max(sizes.values()) <= 6
    for key in sizes:
        members = [p for p in paths if groups[p] == key]
        assert len({p.split("/")[0] for p in members}) == 1  # one class
        assert len({p.split("_")[0] for p in members}) == 1  # one slide: nearest join first
    assert groups == similar_field_groups(images, paths, labels, dup, max_share=0.5)


def test_the_descriptor_sees_the_stain_batch_not_the_cells():
    images, _, _ = _images()
    a, b, other = field_descriptor(images[0]), field_descriptor(images[1]), field_descriptor(
        images[6])
    assert np.linalg.norm(a - b) < np.linalg.norm(a - other)
