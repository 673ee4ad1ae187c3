"""The run record: what a training run made and how, as training writes it and export reads it.

One frozen, versioned type (``run.json`` in a run folder) instead of a free-form dict: training
(:mod:`leukedge.train`) builds it, export (:mod:`leukedge.export`) reads it to write the model
contract, and neither imports the other. The architecture and training settings travel as the
plain dicts of their own typed records (``HybridConfig.to_dict()``, ``TrainSettings.to_dict()``),
which ``leukedge.train`` turns back into objects.

Example:
    >>> record = RunRecord.read("runs/a/run.json")
    >>> record.preprocessing.input_size, record.classes
    ((224, 224), ('Benign', 'Early', 'Pre', 'Pro'))
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from leukedge.runtime.contract import DEFAULT_REVIEW_BELOW
from leukedge.runtime.errors import LeukedgeError
from leukedge.runtime.files import atomic_write_text, read_json_object
from leukedge.runtime.preprocessing import PreprocessSpec

RUN_RECORD_VERSION = 2


class RunRecordError(LeukedgeError, ValueError):
    """A run.json is missing, unreadable, of another version, or incomplete."""


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling of the logits and the expected calibration error before/after."""

    temperature: float = 1.0
    ece_before: Optional[float] = None
    ece_after: Optional[float] = None
    fitted_on: str = "none"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise RunRecordError(f"temperature must be a positive number, got {self.temperature}")


@dataclass(frozen=True)
class RunRecord:
    """Everything export needs from a training run (and what a reader wants to know of it)."""

    classes: tuple[str, ...]
    backbone: str
    model: dict  # HybridConfig.to_dict()
    preprocessing: PreprocessSpec
    input_names: tuple[str, ...]
    settings: dict  # TrainSettings.to_dict()
    weights: dict  # {"init": "imagenet" | "none" | path, "origin": ..., "sha256": ...}
    data: dict  # {"dir", "variant", "counts", "skipped", "grouping"}
    data_manifest_sha256: str
    split_manifest_sha256: str
    seed: int
    parameters: dict
    test_metrics: dict
    training: dict  # epochs, best epoch, seconds, images per second...
    versions: dict
    created: str
    run_id: str
    calibration: Calibration = field(default_factory=Calibration)
    review_below: float = DEFAULT_REVIEW_BELOW
    model_sha256: Optional[str] = None
    version: int = RUN_RECORD_VERSION

    @property
    def hybrid(self) -> bool:
        return "masked_image" in self.input_names

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["classes"], out["input_names"] = list(self.classes), list(self.input_names)
        out["preprocessing"] = self.preprocessing.to_dict()
        out["calibration"] = asdict(self.calibration)
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "run.json") -> "RunRecord":
        version = d.get("version")
        if version != RUN_RECORD_VERSION:
            raise RunRecordError(
                f"{source}: run record version {version or 1} is not {RUN_RECORD_VERSION}; it was "
                "written by an older leukedge, whose models took preprocessed float input. "
                "Retrain the run with this version.")
        try:
            kwargs: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            kwargs["classes"] = tuple(d["classes"])
            kwargs["input_names"] = tuple(d["input_names"])
            kwargs["preprocessing"] = PreprocessSpec.from_dict(d["preprocessing"])
            kwargs["calibration"] = Calibration(**d.get("calibration", {}))
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as e:
            raise RunRecordError(f"{source}: incomplete run record ({type(e).__name__}: {e})") from e

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunRecord":
        try:
            data = read_json_object(path, "run record")
        except ValueError as e:
            raise RunRecordError(str(e)) from e
        return cls.from_dict(data, str(path))

    def with_updates(self, **changes: Any) -> "RunRecord":
        from dataclasses import replace

        return replace(self, **changes)
