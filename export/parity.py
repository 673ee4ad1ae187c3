"""Agreement between two models' probabilities.

Used by export (ONNX vs Keras, strict tolerance), quantization (INT8/FP16 vs FP32) and the
comparison command. The models are run by size within the pixel budget
(:func:`leukedge.runtime.batching.model_runs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PARITY_RUN_IMAGES = 32  # images per model run of a parity check


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
