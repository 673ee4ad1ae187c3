"""The input checks every leukedge model carries, and why a prediction needs review.

A model measures each image inside its graph (contrast, stain coverage, the distance of its
features to the training images' ``ood_score``); its contract holds the limits
(:class:`InputChecks`, set at export on the training images). A prediction needs review when
its confidence is under the model's threshold or an input check fails; each reason is a
:class:`ReviewReason`: a stable machine-readable ``code`` (:data:`REVIEW_CODES`) beside its
message, so software matches codes while people read messages.

Example:
    >>> checks = InputChecks(min_contrast=0.02, min_stain_coverage=0.004, max_ood_score=2.5)
    >>> [r.code for r in checks.reasons(contrast=0.001, stain_coverage=0.1, ood_score=1.0)]
    ['blank']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

# code -> what it means; the codes are part of the row format and never change meaning
REVIEW_CODES = {
    "low_confidence": "the confidence is under the model's review threshold",
    "blank": "a blank or flat frame (contrast under the model's minimum)",
    "no_stain": "no stained cells (stain coverage under the model's minimum)",
    "unlike_training": "unlike the training images (ood_score over the model's maximum)",
    "unreadable": "the file could not be classified (its row carries the error)",
}


@dataclass(frozen=True)
class ReviewReason:
    """Why a prediction needs review: ``code`` for software, ``message`` for people."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in REVIEW_CODES:
            raise ValueError(f"Unknown review code {self.code!r}. Valid: "
                             f"{', '.join(REVIEW_CODES)}")

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


def low_confidence(confidence: float, threshold: float) -> ReviewReason:
    return ReviewReason("low_confidence", f"low confidence ({confidence:.3f} < {threshold:g})")


def finite_problem(value: Any, what: str, low: float = -math.inf,
                   high: float = math.inf) -> list[str]:
    """[the problem] when ``value`` is not a number in [low, high], else []."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and low <= value <= high):
        return [f"{what} must be a number in [{low:g}, {high:g}], got {value!r}"]
    return []


@dataclass(frozen=True)
class InputChecks:
    """When an input is not a smear a model should judge: below a minimum or above a maximum,
    the prediction needs review with the reason named. Set on the training images
    (docs/models.md, "Input checks")."""

    min_contrast: float = 0.0
    min_stain_coverage: float = 0.0
    max_ood_score: Optional[float] = None

    def reasons(self, contrast: float, stain_coverage: float,
                ood_score: Optional[float]) -> list[ReviewReason]:
        """Why an input fails the checks (empty when it passes). NaN always fails."""
        out = []
        if not contrast >= self.min_contrast:
            out.append(ReviewReason("blank", f"blank or flat image (contrast {contrast:.3f} < "
                                             f"{self.min_contrast:.3f})"))
        if not stain_coverage >= self.min_stain_coverage:
            out.append(ReviewReason("no_stain", f"no stained cells found (stain coverage "
                                                f"{stain_coverage:.3f} < "
                                                f"{self.min_stain_coverage:.3f})"))
        if self.max_ood_score is not None and ood_score is not None \
                and not ood_score <= self.max_ood_score:
            out.append(ReviewReason("unlike_training", f"unlike the training images (score "
                                                       f"{ood_score:.2f} > "
                                                       f"{self.max_ood_score:.2f})"))
        return out

    def problems(self) -> list[str]:
        out = finite_problem(self.min_contrast, "input_checks.min_contrast", 0.0, 1.0)
        out += finite_problem(self.min_stain_coverage, "input_checks.min_stain_coverage", 0.0,
                              1.0)
        if self.max_ood_score is not None:
            out += finite_problem(self.max_ood_score, "input_checks.max_ood_score", 0.0)
        return out

    def to_dict(self) -> dict:
        return asdict(self)
