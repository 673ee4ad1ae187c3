"""How to train: one frozen record, validated at the boundary, recorded in the run record.

The architecture is a :class:`~leukedge.train.model.HybridConfig`; these are the settings of
the training itself. Two methods:

- ``end_to_end``: every trainable layer, every step, through the full network (from-scratch
  backbones such as ``small_cnn``; the reference study's recipe with ``schedule="plateau"``).
- ``two_phase`` (EfficientNet-Lite with pretrained weights): phase 1 trains the head on frozen
  features; phase 2 fine-tunes the upper blocks (from ``fine_tune_from``) at a lower rate, reading
  the frozen lower blocks' output from the augmentation bank (:mod:`leukedge.train.feature_bank`).
  BatchNorm statistics stay those of ImageNet. Early stopping on the validation split.

``method="auto"`` picks ``two_phase`` when the backbone can be cut and weights are loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

from leukedge.modelkit.splits import DEFAULT_FRACTIONS

from .augment import AugmentSpec

SCHEDULES = ("plateau", "cosine")
METHODS = ("auto", "end_to_end", "two_phase")


@dataclass(frozen=True)
class TrainSettings:
    """Training settings (recorded in the run record).

    The defaults are those the recipes share (:mod:`leukedge.train.recipes` states only what a
    row changes); the reference study's were 30 epochs at 1e-4 with the plateau schedule,
    patience 5, and :data:`~leukedge.train.augment.REFERENCE_AUGMENT`.

    ``epochs`` and ``learning_rate`` are those of end-to-end training, or of phase 2 (the
    fine-tuning) of two-phase training; ``head_epochs`` and ``head_learning_rate`` are phase 1's.
    """

    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 2e-4
    seed: int = 42
    variant: str = "original"
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    patience: int = 4
    lr_patience: int = 3
    schedule: str = "cosine"
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    method: str = "auto"
    head_epochs: int = 30
    head_learning_rate: float = 1e-3
    fine_tune_from: Optional[int] = None  # first trainable block; None: the backbone row's
    # the feature bank's copies per image; None: the backbone row's (10; SVM, XGBoost: 3, the
    # setting they were cross-validated with)
    bank_copies: Optional[int] = None
    bank_seed: int = 0  # augmentation of the bank's copies; the same for every fold of a CV
    near_duplicates: bool = True  # group near-duplicate images in the split, not only exact ones

    def validate(self) -> None:
        """Raises ValueError naming the CLI option when a setting is out of range."""
        for name in ("epochs", "batch_size", "patience", "lr_patience", "head_epochs"):
            if int(getattr(self, name)) < 1:
                flag = name.replace("_", "-")
                raise ValueError(f"--{flag} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown --schedule {self.schedule!r}. Valid: {', '.join(SCHEDULES)}")
        if self.method not in METHODS:
            raise ValueError(f"Unknown --method {self.method!r}. Valid: {', '.join(METHODS)}")
        for name in ("learning_rate", "head_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.bank_copies is not None and self.bank_copies < 2:
            raise ValueError(f"--bank-copies must be >= 2, got {self.bank_copies}")

    def for_backbone(self, row) -> "TrainSettings":
        """These settings with the backbone row's defaults filled in (``bank_copies``)."""
        return self if self.bank_copies is not None else self.with_updates(
            bank_copies=row.bank_copies)

    def resolved_method(self, kind: str, weights: Optional[str]) -> str:
        """``end_to_end``, ``two_phase`` or ``classical`` for a backbone kind and weights."""
        if kind == "classical":
            if self.method != "auto":
                raise ValueError(f"--method {self.method} is for neural networks; the SVM and "
                                 "XGBoost rows are fitted on hand-made features (leave --method)")
            return "classical"
        if self.method != "auto":
            if self.method == "two_phase" and kind != "efficientnet_lite":
                raise ValueError("--method two_phase needs an EfficientNet-Lite backbone "
                                 f"(its blocks can be cut); this one is {kind}")
            return self.method
        return "two_phase" if kind == "efficientnet_lite" and weights else "end_to_end"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fractions"] = list(self.fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        d = dict(d)
        d["fractions"] = tuple(d.get("fractions", DEFAULT_FRACTIONS))
        d["augment"] = AugmentSpec(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in d.get("augment", {}).items()})
        return cls(**d)

    def with_updates(self, **changes: Any) -> "TrainSettings":
        return replace(self, **changes)
