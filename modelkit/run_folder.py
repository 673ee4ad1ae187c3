"""A training run's folder: the one place that knows its file names.

``leukedge train`` (and each fold of ``leukedge crossval``) writes a run folder; ``export``,
``compare --keras`` and the cross-validation evaluation read it. Its files:

- ``model.keras``: the trained network, or ``network.onnx`` for the classical rows (SVM,
  XGBoost: hand-made feature graph and classifier, already ONNX);
- ``run.json``: the :class:`~leukedge.modelkit.run_record.RunRecord`, written last: a folder
  without it holds what a failed run left behind;
- ``split.json``, ``history.json``, ``training_curves.png``, ``metrics.json``;
- ``model.onnx``: what ``leukedge export`` writes there by default.

Example:
    >>> run = RunFolder.of("runs/lite0")          # or runs/lite0/model.keras
    >>> run.model_file, run.classical, run.read_record().classes
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from .run_record import RunRecord


@dataclass(frozen=True)
class RunFolder:
    """The folder of one training run and the paths of its files."""

    root: Path

    KERAS_MODEL = "model.keras"
    NETWORK = "network.onnx"
    RECORD = "run.json"
    SPLIT = "split.json"
    HISTORY = "history.json"
    CURVES = "training_curves.png"
    METRICS = "metrics.json"
    ONNX_MODEL = "model.onnx"
    FILES = (KERAS_MODEL, NETWORK, SPLIT, RECORD, HISTORY, CURVES, METRICS)  # what train writes

    @classmethod
    def of(cls, source: str | os.PathLike) -> "RunFolder":
        """A run folder, or its model file (``model.keras`` / ``network.onnx``).

        Raises:
            ValueError: neither, or the folder holds no model, or no run record.
        """
        source = Path(source)
        run = cls(source if source.is_dir() else source.parent)
        named = source.is_dir() or source.name in (cls.KERAS_MODEL, cls.NETWORK)
        if not named or not run.model_file.is_file():
            raise ValueError(f"{source}: expected a run folder holding {cls.KERAS_MODEL} or "
                             f"{cls.NETWORK} (made by `leukedge train`), or that file")
        if not run.record.is_file():
            raise ValueError(f"{run.record} is missing: the run record holds the preprocessing "
                             "the model was trained behind, its classes and calibration")
        return run

    @property
    def keras_model(self) -> Path:
        return self.root / self.KERAS_MODEL

    @property
    def network(self) -> Path:
        return self.root / self.NETWORK

    @property
    def record(self) -> Path:
        return self.root / self.RECORD

    @property
    def split(self) -> Path:
        return self.root / self.SPLIT

    @property
    def onnx_model(self) -> Path:
        return self.root / self.ONNX_MODEL

    @property
    def classical(self) -> bool:
        """An SVM or XGBoost run: its model is ``network.onnx``, not a Keras file."""
        return self.network.is_file()

    @property
    def model_file(self) -> Path:
        return self.network if self.classical else self.keras_model

    def existing(self) -> list[str]:
        """The run files present (a folder with ``run.json`` holds a finished run)."""
        return [f for f in self.FILES if (self.root / f).exists()]

    def read_record(self) -> RunRecord:
        return RunRecord.read(self.record)
