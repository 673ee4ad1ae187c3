"""The augmentation bank: frozen lower-backbone features of K augmented copies of every image.

Two-phase training of a pretrained backbone never changes its lower blocks, so their output for
a given input never changes either. The bank computes it once, for copy 0 (the image as it is)
and copies 1..K-1 (each augmented with its own seed: ``default_rng([seed, copy, image index])``),
through the model's preprocessing graph and the frozen lower part, and keeps it as float16 on
disk. Training the upper blocks then reads a copy per image per epoch instead of running the
whole backbone forward and backward: on 2 CPU cores this is what makes fine-tuning a pretrained
backbone fit in minutes (docs/models.md has the numbers).

The bank depends only on the images, the augmentation, the preprocessing, the lower part's
weights and the cut, not on the cross-validation fold: every fold of a cross-validation shares
one bank. Its cache key hashes all of those.

Example:
    >>> bank = build_bank(images, relpaths, parts.lower, runner, BankSpec(copies=10, seed=0,
    ...                   augment=AugmentSpec(...)), fingerprint)
    >>> x = bank.gather(indices, copies)        # float32 [n, h, w, c]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.modelkit.graph.runner import PreprocessRunner

from .augment import AugmentSpec, augment
from .data import run_graph
from .pretrained import cache_dir

log = logging.getLogger(__name__)
BATCH = 64


@dataclass(frozen=True)
class BankSpec:
    """How many copies per image (copy 0 is the image itself) and how they are augmented."""

    copies: int
    seed: int
    augment: AugmentSpec

    def validate(self) -> None:
        if self.copies < 2:
            raise ValueError(f"a bank needs at least 2 copies (the image and one augmented copy), "
                             f"got {self.copies}")


@dataclass
class FeatureBank:
    """features[copy, image] (float16) with the image order and the spec that made them."""

    features: np.ndarray
    relpaths: list[str]
    spec: BankSpec
    key: str

    def gather(self, indices: Sequence[int], copies: Sequence[int]) -> np.ndarray:
        """float32 features of image ``indices[j]`` in copy ``copies[j]``."""
        return self.features[np.asarray(copies), np.asarray(indices)].astype(np.float32)

    def augmented(self, image: np.ndarray, index: int, copy: int) -> np.ndarray:
        """The uint8 pixels of copy ``copy`` of image ``index`` (regenerated, bit-identical)."""
        if copy == 0:
            return image
        return augment(image, self.spec.augment, np.random.default_rng([self.spec.seed, copy, index]))


def bank_key(relpaths: Sequence[str], spec: BankSpec, runner: PreprocessRunner,
             lower_fingerprint: str) -> str:
    payload = {"relpaths": hashlib.sha256("\n".join(relpaths).encode()).hexdigest(),
               "copies": spec.copies, "seed": spec.seed, "augment": spec.augment.to_dict(),
               "preprocessing": runner.spec.to_dict(), "lower": lower_fingerprint, "format": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def model_fingerprint(model) -> str:
    """sha256 of a Keras model's weights, in order: names what a lower part computes."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(np.asarray(w), np.float32).tobytes())
    return h.hexdigest()


def _compute(images: Sequence[np.ndarray], lower, runner: PreprocessRunner, spec: BankSpec,
             out: np.ndarray) -> None:
    started = time.perf_counter()
    for copy in range(spec.copies):
        for start in range(0, len(images), BATCH):
            idx = range(start, min(start + BATCH, len(images)))
            chosen = [images[i] if copy == 0 else
                      augment(images[i], spec.augment, np.random.default_rng([spec.seed, copy, i]))
                      for i in idx]
            x = run_graph(runner, chosen)["image"]
            out[copy, start:start + len(chosen)] = np.asarray(lower(x, training=False),
                                                              np.float16)
        done = (copy + 1) * len(images)
        log.info("Feature bank: copy %d/%d (%.0f images/s)", copy + 1, spec.copies,
                 done / (time.perf_counter() - started))


def build_bank(images: Sequence[np.ndarray], relpaths: Sequence[str], lower,
               runner: PreprocessRunner, spec: BankSpec, lower_fingerprint: str,
               folder: Optional[Path] = None) -> FeatureBank:
    """The bank for these images, from the cache folder when it is there, else computed and
    saved there (atomically: a partly written bank is never read)."""
    spec.validate()
    key = bank_key(relpaths, spec, runner, lower_fingerprint)
    folder = folder or cache_dir() / "banks"
    path = folder / f"{key}.npy"
    shape = (spec.copies, len(images), *lower.output.shape[1:])
    if path.is_file():
        features = np.load(path, mmap_mode="r", allow_pickle=False)
        if features.shape == shape:
            log.info("Feature bank from the cache %s", path)
            return FeatureBank(features, list(relpaths), spec, key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.npy"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        _compute(images, lower, runner, spec, out)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return FeatureBank(np.load(path, mmap_mode="r", allow_pickle=False), list(relpaths), spec, key)
