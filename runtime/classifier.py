"""The embedding API: :class:`Classifier` turns smear images into :class:`Prediction` objects.

A leukedge model is one ONNX file that takes raw uint8 RGB pixels of any size; resizing,
normalisation, the stain mask, the calibrated softmax and the input checks all run inside it.
The classifier decodes files (:mod:`leukedge.runtime.decode`), feeds the pixels, and turns the
outputs into predictions, flagging for review those under the contract's confidence threshold
and those that fail its input checks (with the reason). One instance may be shared by many
threads: after construction it holds no mutable state, and ``InferenceSession.run`` is
thread-safe.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .batching import CPU_RUN_IMAGES, MAX_RUN_IMAGES, PIXEL_BUDGET, model_runs
from .contract import (INPUT_NAME, OPTIONAL_OUTPUTS, OUTPUT_NAME, ContractError,
                       ModelContract, contract_from_metadata, leukedge_version)
from .cpu import has_int8_vnni
from .decode import ImageSource, load_image
from .files import sha256_file
from .input_checks import ReviewReason, low_confidence
from .models import bundled_models, resolve_model
from .session import create_session

DECIMALS = 6  # confidences are reported, and compared with the threshold, at this precision


class Int8SaturationWarning(UserWarning):
    """An INT8 model that needs VNNI runs on a CPU without it (see leukedge.runtime.cpu)."""


@dataclass(frozen=True)
class Prediction:
    """The classification of one image.

    Attributes:
        label: the most probable class.
        confidence: its probability (rounded to 6 decimals, as reported).
        probabilities: every class's probability, in the model's class order.
        needs_review: a person should look: the confidence is under the review threshold, or
            the image failed an input check (``review_reasons`` says which).
        review_reasons: why it needs review (empty when it does not): each a
            :class:`~leukedge.runtime.input_checks.ReviewReason` with a stable ``code``
            ("low_confidence", "blank", "no_stain", "unlike_training") and a ``message``.
        input_checks: what the model's input checks measured (contrast, stain coverage,
            ood score...).
        heatmap: where the model saw the predicted class, float [h, w] in [0, 1] at the
            network's last feature resolution (7 x 7 for a 224 px EfficientNet-Lite0), for
            overlays; None when the model has no ``heatmap`` output (older files, SVM and
            XGBoost models). Not part of :meth:`to_dict`.

    Example:
        >>> p = clf.predict("smear.jpg")
        >>> p.label, p.needs_review, [r.code for r in p.review_reasons]
        ('Pre', False, [])
    """

    label: str
    confidence: float
    probabilities: dict[str, float] = field(hash=False)
    needs_review: bool
    review_reasons: tuple[ReviewReason, ...] = ()
    input_checks: dict[str, float] = field(default_factory=dict, hash=False)
    heatmap: Optional[np.ndarray] = field(default=None, hash=False, compare=False, repr=False)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"label": self.label, "confidence": self.confidence,
                "probabilities": dict(self.probabilities), "needs_review": self.needs_review,
                "review_reasons": [r.to_dict() for r in self.review_reasons],
                "input_checks": dict(self.input_checks)}


@dataclass(frozen=True)
class ImageRun:
    """One image's outcome of :meth:`Classifier.predict_runs`."""

    prediction: Prediction
    mask: Optional[np.ndarray]  # the stain mask at the model's input size, when asked for
    seconds: float  # this image's share of its model run


class Classifier:
    """A leukedge ONNX model ready to classify images; safe to share across threads.

    Args:
        model: an ONNX file with a leukedge contract, or the name of a bundled model
            ("default", "fast"; see ``leukedge models``); None = "default".
        provider: "auto", "cuda" or "cpu" (see :func:`~leukedge.runtime.session.create_session`).
        threads: ONNX Runtime intra-op threads; None = the CPUs this process may use (at most 8).
        review_below: predictions with a lower confidence need review; None = the contract's.

    Raises:
        ModelNotFoundError: no such file or bundled model.
        RuntimeSetupError: ONNX Runtime is missing, cannot load the file, or lacks the provider.
        ContractError: the file has no valid leukedge contract or does not match it.
        ValueError: an argument is out of range.

    Example:
        >>> clf = Classifier(provider="cpu")
        >>> clf.predict("smear.jpg").label
        'Early'
        >>> [p.label for p in clf.predict_batch(["a.jpg", "b.png"])]
        ['Benign', 'Pro']
    """

    def __init__(self, model: str | os.PathLike | None = None, provider: str = "auto",
                 threads: Optional[int] = None, review_below: Optional[float] = None):
        if review_below is not None and not 0.0 <= float(review_below) <= 1.0:
            raise ValueError(f"--review-below must be in [0, 1], got {review_below}")
        self.model_path: Path = resolve_model(model)
        self._session, self.session_info = create_session(self.model_path, provider=provider,
                                                          threads=threads)
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.contract: ModelContract = contract_from_metadata(metadata, str(self.model_path))
        self._check_graph()
        self._warn_if_int8_may_saturate()
        self.review_below = (self.contract.review_below if review_below is None
                             else float(review_below))
        self._warm_up()

    # -- public API ---------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in the model's output order."""
        return self.contract.classes

    @functools.cached_property
    def provenance(self) -> dict:
        """What every result row says about the model that made it: its name (a bundled
        model's name, else the file name), sha256, precision, and this leukedge's version."""
        path = self.model_path
        name = next((n for n, p in bundled_models().items() if p == path), path.name)
        return {"model": name, "model_sha256": sha256_file(path),
                "precision": self.contract.precision, "leukedge_version": leukedge_version()}

    def predict(self, source: ImageSource) -> Prediction:
        """Classify one image (path, encoded bytes, or RGB uint8 array).

        Raises:
            ImageError: the image cannot be used; the message names it and says why.
        """
        return self.predict_pixels([load_image(source)])[0]

    def predict_batch(self, sources: Iterable[ImageSource], batch_size: int = 16) -> list[Prediction]:
        """Classify several images, ``batch_size`` per model run; results in input order.

        Raises:
            ImageError: on the first image that cannot be used (see
                :func:`~leukedge.runtime.pipeline.classify_files` for one result per image).
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = list(sources)
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            out.extend(self.predict_pixels([load_image(s) for s in items[start:start + batch_size]]))
        return out

    def predict_pixels(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify decoded RGB uint8 images (any sizes; runs by size within the pixel budget,
        :mod:`leukedge.runtime.batching`)."""
        return [p for p, _ in self.predict_pixels_and_masks(images, masks=False)]

    def predict_pixels_and_masks(self, images: Sequence[np.ndarray], masks: bool = True
                                 ) -> list[tuple[Prediction, Optional[np.ndarray]]]:
        """:meth:`predict_pixels` with each image's stain mask (for overlays) from the same
        model runs; the mask is None when ``masks`` is False or the model has no mask output."""
        return [(r.prediction, r.mask) for r in self.predict_runs(images, masks)]

    def predict_runs(self, images: Sequence[np.ndarray], masks: bool = False,
                     max_images: Optional[int] = None,
                     pixel_budget: int = PIXEL_BUDGET) -> list["ImageRun"]:
        """Each image's prediction, stain mask (when ``masks`` and the model has one) and share
        of its model run's time, in input order. Images run by size, at most ``max_images``
        (default :attr:`run_images`) and ``pixel_budget`` pixels per run
        (:func:`~leukedge.runtime.batching.plan_runs`)."""
        masks = masks and "stain_mask" in self.contract.outputs
        names = self.default_outputs + (["stain_mask"] if masks else [])
        results: dict[int, ImageRun] = {}
        runs = model_runs(images, max_images or self.run_images, pixel_budget)
        for indices, batch in runs:
            started = time.perf_counter()
            outputs = self.run(batch, names)
            share = (time.perf_counter() - started) / len(indices)
            mask = outputs.pop("stain_mask", None)
            for j, i in enumerate(indices):
                results[i] = ImageRun(
                    self.prediction_from_outputs({k: v[j] for k, v in outputs.items()}),
                    None if mask is None else mask[j], share)
        return [results[i] for i in range(len(images))]

    def run(self, pixels: np.ndarray, outputs: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
        """The model's raw outputs for a uint8 batch [N, H, W, 3] (one size).

        ``outputs`` defaults to the probabilities, the input measures and the heatmap (when
        the model has one); add ``"stain_mask"`` for the mask (overlays).
        """
        batch = np.asarray(pixels)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"pixels must be uint8 [N, H, W, 3] RGB, got {batch.dtype} "
                             f"{list(batch.shape)}")
        names = list(outputs) if outputs is not None else self.default_outputs
        if len(batch) == 0:
            return {n: np.zeros((0,)) for n in names}
        values = self._session.run(names, {INPUT_NAME: np.ascontiguousarray(batch)})
        return dict(zip(names, values))

    @property
    def run_images(self) -> int:
        """Images per model run at most: a few for a single-threaded session on the CPU
        provider, whose runs are faster per image when their tensors stay in the core's cache
        (:data:`~leukedge.runtime.batching.CPU_RUN_IMAGES`); else as many as the pixel budget
        allows (several intra-op threads do better on larger runs)."""
        info = self.session_info
        single = info.provider == "cpu" and info.intra_op_threads == 1
        return CPU_RUN_IMAGES if single else MAX_RUN_IMAGES

    @property
    def default_outputs(self) -> list[str]:
        """The outputs a prediction needs: probabilities, the input measures and the heatmap."""
        return [o for o in self.contract.outputs if o != "stain_mask"]

    @property
    def has_heatmap(self) -> bool:
        return "heatmap" in self.contract.outputs

    def prediction_from_outputs(self, row: dict[str, np.ndarray]) -> Prediction:
        """The prediction of one image from its row of model outputs (see :meth:`run`)."""
        probs = np.asarray(row[OUTPUT_NAME], np.float64)
        k = int(np.argmax(probs))
        confidence = round(float(probs[k]), DECIMALS)
        probabilities = {name: round(float(p), DECIMALS) for name, p in zip(self.classes, probs)}
        measured = {k_: float(v) for k_, v in row.items()
                    if k_ != OUTPUT_NAME and k_ not in OPTIONAL_OUTPUTS}
        heatmap = row.get("heatmap")
        reasons = self.contract.input_checks.reasons(measured.get("contrast", 1.0),
                                                     measured.get("stain_coverage", 1.0),
                                                     measured.get("ood_score"))
        # `not >=` so a NaN confidence (a broken model) is flagged for review, never trusted.
        if not confidence >= self.review_below:
            reasons.insert(0, low_confidence(confidence, self.review_below))
        return Prediction(self.classes[k], confidence, probabilities, bool(reasons),
                          tuple(reasons), measured,
                          None if heatmap is None else np.asarray(heatmap, np.float32))

    def __repr__(self) -> str:
        return (f"Classifier(model={str(self.model_path)!r}, provider={self.session_info.provider!r}, "
                f"classes={list(self.classes)}, review_below={self.review_below})")

    # -- construction helpers ---------------------------------------------------------------
    def _warn_if_int8_may_saturate(self) -> None:
        quantization = self.contract.quantization or {}
        if (self.contract.precision == "int8" and quantization.get("reduce_range") is False
                and self.session_info.provider == "cpu" and has_int8_vnni() is False):
            warnings.warn(
                f"{self.model_path.name}: an INT8 model with full 8-bit weights on a CPU without "
                "VNNI: ONNX Runtime's INT8 kernels can saturate here and lose accuracy. Use the "
                "FP32 model (e.g. --model default-fp32) or one made for such CPUs (quantized "
                "with --reduce-range --depthwise-8bit, like the bundled -int8-avx2 files).",
                Int8SaturationWarning, stacklevel=3)

    def _check_graph(self) -> None:
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].type != "tensor(uint8)":
            raise ContractError(
                f"{self.model_path}: a leukedge model has one input {INPUT_NAME!r} of type "
                f"uint8; this one has {[(i.name, i.type) for i in inputs]}")
        names = {o.name for o in self._session.get_outputs()}
        missing = [o for o in self.contract.outputs if o not in names]
        if missing:
            raise ContractError(f"{self.model_path}: contract outputs {missing} are not outputs "
                                f"of the model (outputs: {', '.join(sorted(names))})")

    def _warm_up(self) -> None:
        """One run on a small blank image: allocates buffers and checks the output's shape."""
        probs = self.run(np.zeros((1, 32, 32, 3), np.uint8), [OUTPUT_NAME])[OUTPUT_NAME]
        if probs.shape != (1, len(self.classes)):
            raise ContractError(
                f"{self.model_path}: output {OUTPUT_NAME!r} has shape {list(probs.shape[1:])} per "
                f"image, but the contract lists {len(self.classes)} classes {list(self.classes)}")
