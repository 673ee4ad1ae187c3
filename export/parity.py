"""Agreement between two models' probabilities, and the inputs used to measure it.

Used by export (ONNX vs Keras, strict tolerance), quantization (INT8/FP16 vs FP32) and compare.
Every input goes through :mod:`leukedge.runtime.preprocess`, the one preprocessing path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from leukedge.runtime.preprocess import ImageSource, PreprocessSpec, preprocess_batch

PredictFn = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class ParityReport:
    """How closely a candidate model's probabilities follow a reference's on the same inputs."""

    n_images: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    argmax_mismatches: int
    tolerance: float
    source: str

    @property
    def passed(self) -> bool:
        """Within tolerance and the same top-1 class on every input."""
        return self.max_abs_diff <= self.tolerance and self.argmax_mismatches == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        return (f"{self.n_images} images ({self.source}): max |dp| = {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:g}), mean |dp| = {self.mean_abs_diff:.3g}, "
                f"top-1 agreement {self.argmax_agreement:.1%} ({self.argmax_mismatches} differ)")


def compare_probabilities(reference: np.ndarray, candidate: np.ndarray, *,
                          tolerance: float, source: str) -> ParityReport:
    """Compare two (N, classes) probability arrays."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"probability shapes differ: reference {reference.shape}, "
                         f"candidate {candidate.shape}")
    if reference.shape[0] == 0:
        raise ValueError("no inputs to compare")
    diff = np.abs(reference - candidate)
    mismatches = int(np.sum(reference.argmax(1) != candidate.argmax(1)))
    return ParityReport(
        n_images=int(reference.shape[0]), max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()), argmax_agreement=1.0 - mismatches / reference.shape[0],
        argmax_mismatches=mismatches, tolerance=float(tolerance), source=source)


def synthetic_images(n: int, input_size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Deterministic RGB uint8 images with smear-like purple blobs, for when no real image is given."""
    rng = np.random.default_rng(seed)
    h, w = input_size
    out = []
    for _ in range(n):
        img = rng.integers(150, 255, size=(h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:h, :w]
        for _ in range(3):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), max(2, h // 8)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[blob] = (110, 40, 160)  # H ~ 0.77, S ~ 0.75, V ~ 0.63: inside the purple mask
        out.append(img)
    return out


def feeds_for(input_names: dict[str, str], images: np.ndarray, masked: np.ndarray) -> dict:
    """Model feeds from preprocessed arrays; ``input_names`` maps content ('image', 'masked_image')
    to the model's input name."""
    arrays = {"image": images, "masked_image": masked}
    return {name: arrays[content] for content, name in input_names.items()}


def preprocessed_inputs(sources: Sequence[ImageSource], spec: PreprocessSpec,
                        input_names: dict[str, str]) -> dict[str, np.ndarray]:
    """Images (paths, bytes or arrays) -> model feeds through the shared preprocessing."""
    images, masked = preprocess_batch(list(sources), spec)
    return feeds_for(input_names, images, masked)


def predict_batched(predict: PredictFn, feeds: dict[str, np.ndarray], batch_size: int = 8) -> np.ndarray:
    """Run ``predict`` over feeds in batches and stack the (N, classes) results."""
    n = len(next(iter(feeds.values())))
    parts = [np.asarray(predict({k: v[i:i + batch_size] for k, v in feeds.items()}))
             for i in range(0, n, batch_size)]
    return np.concatenate(parts, axis=0)


def session_predictor(session: Any, output_name: str) -> PredictFn:
    """An onnxruntime session as a ``feeds -> probabilities`` callable."""
    def predict(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([output_name], feeds)[0]
    return predict
