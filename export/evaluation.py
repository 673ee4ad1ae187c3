"""Labelled images -> predictions -> the seed's metrics, for any ONNX model or predict callable.

Images are chosen through :mod:`leukedge.runtime.dataset` (a class-folder tree, or the test split
of a split manifest), preprocessed through :mod:`leukedge.runtime.preprocess`, and scored
with :func:`leukedge.runtime.metrics.evaluate`; sessions come from
:func:`leukedge.runtime.session.create_session`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.runtime.contract import ModelContract
from leukedge.runtime.dataset import discover_dataset, read_split_manifest, select_split
from leukedge.runtime.metrics import evaluate

from .calibration import select_evenly
from .parity import predict_batched, session_predictor


@dataclass(frozen=True)
class LabelledSet:
    """Image files with their class indices, and a line saying where they came from."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.paths)


def load_labelled(data_dir: str | os.PathLike, classes: Sequence[str],
                  split_manifest: Optional[str | os.PathLike] = None, split: str = "test",
                  limit: Optional[int] = None) -> LabelledSet:
    """Labelled images of ``data_dir``: all of them, or one split of a manifest.

    Args:
        data_dir: ``<root>/<class>/*.jpg`` (or the ALL layout with ``Original/``).
        classes: the model's class names, in output order.
        split_manifest: a ``split.json``; its ``split`` part is used (files checked by sha256).
        split: which part of the manifest.
        limit: at most this many images, spread evenly over the sorted list (None = all).
    """
    variant = "original"
    manifest = None
    if split_manifest is not None:
        manifest = read_split_manifest(split_manifest)
        variant = manifest.variant
    dataset = discover_dataset(data_dir, variant=variant, classes=tuple(classes))
    records = (select_split(dataset, manifest, split) if manifest is not None
               else list(dataset.records))
    where = f"{split} split of {split_manifest}" if manifest is not None else "all images"
    if limit is not None and limit < len(records):
        keep = {str(p) for p in select_evenly([dataset.path(r) for r in records], limit)}
        records = [r for r in records if str(dataset.path(r)) in keep]
        where += f", {len(records)} spread evenly"
    return LabelledSet(paths=tuple(dataset.path(r) for r in records),
                       labels=dataset.label_indices(records), classes=tuple(classes),
                       source=f"{dataset.root} ({where})")


def input_names_of(contract: ModelContract) -> dict[str, str]:
    """content -> input name, from a contract."""
    return {spec.content: spec.name for spec in contract.inputs}


def session_probabilities(session: Any, contract: ModelContract, feeds: dict[str, np.ndarray],
                          batch_size: int = 8) -> np.ndarray:
    """Probabilities of an onnxruntime session over feeds, in batches."""
    return predict_batched(session_predictor(session, contract.output_name), feeds, batch_size)


def metrics_of(probs: np.ndarray, labelled: LabelledSet) -> dict:
    """The seed's metrics of probabilities against the set's labels."""
    return evaluate(labelled.labels, np.asarray(probs).argmax(axis=1), labelled.classes)
