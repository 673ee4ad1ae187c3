"""The embedding API: :class:`Classifier` turns smear images into :class:`Prediction` objects.

A classifier configures itself from the model's contract (class names, input size, HSV mask
thresholds, input names) and runs through :func:`~leukedge.runtime.session.create_session`, the
one door to ONNX Runtime. One instance may be shared by many threads: after construction it holds
no mutable state, and ``InferenceSession.run`` is thread-safe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .contract import ContractError, ModelContract, contract_from_metadata
from .models import ModelNotFoundError, default_model_path
from .preprocess import ImageSource, PreprocessSpec, preprocess, preprocess_batch
from .session import SessionInfo, create_session

# ONNX tensor types a leukedge image input may have; pixels are cast to it (fp16 models).
_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                 "tensor(double)": np.float64}


@dataclass(frozen=True)
class Prediction:
    """The classification of one image.

    Attributes:
        label: the most probable class.
        confidence: its probability.
        probabilities: every class's probability, in the model's class order.
        needs_review: the confidence is under the review threshold (or not a finite number).

    Example:
        >>> p = Prediction("Pre", 0.91, {"Benign": 0.01, "Early": 0.05, "Pre": 0.91, "Pro": 0.03}, False)
        >>> p.to_dict()["label"]
        'Pre'
    """

    label: str
    confidence: float
    probabilities: dict[str, float] = field(hash=False)
    needs_review: bool

    def to_dict(self) -> dict:
        """A JSON-ready dict: label, confidence, probabilities, needs_review."""
        return {"label": self.label, "confidence": self.confidence,
                "probabilities": dict(self.probabilities), "needs_review": self.needs_review}


@dataclass(frozen=True)
class _InputBinding:
    name: str
    dtype: type


class Classifier:
    """A leukedge ONNX model ready to classify images; safe to share across threads.

    Args:
        model_path: an ONNX file with a leukedge contract; None = the bundled default int8 model.
        provider: "auto", "cuda" or "cpu" (see :func:`~leukedge.runtime.session.create_session`).
        threads: ONNX Runtime intra-op threads; None = the CPUs this process may use (at most 8).
        review_below: predictions with a lower confidence get ``needs_review=True``; None = the
            contract's ``review_below``.

    Raises:
        ModelNotFoundError: the file (or the bundled default) does not exist.
        RuntimeSetupError: ONNX Runtime is missing, cannot load the file, or lacks the provider.
        ContractError: the file has no valid leukedge contract or does not match it.
        ValueError: an argument is out of range.

    Example:
        >>> clf = Classifier("leukedge-int8.onnx", provider="cpu")
        >>> clf.predict("smear.jpg").label
        'Early'
        >>> [p.label for p in clf.predict_batch(["a.jpg", "b.png"], batch_size=16)]
        ['Benign', 'Pro']
    """

    def __init__(self, model_path: str | os.PathLike | None = None, provider: str = "auto",
                 threads: Optional[int] = None, review_below: Optional[float] = None):
        if review_below is not None and not 0.0 <= float(review_below) <= 1.0:
            raise ValueError(f"review_below must be in [0, 1], got {review_below}")
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: model file not found")
        self.model_path = path
        self.session_info: SessionInfo
        self._session, self.session_info = create_session(path, provider=provider, threads=threads)
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.contract: ModelContract = contract_from_metadata(metadata, str(path))
        self.spec: PreprocessSpec = self.contract.preprocessing
        self._image_input = self._bind_input("image", required=True)
        self._masked_input = self._bind_input("masked_image", required=False)
        self._check_unbound_inputs()
        self._output = self._check_output()
        self.review_below = (self.contract.review_below if review_below is None
                             else float(review_below))
        self._warm_up()

    # -- public API ---------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in the model's output order."""
        return self.contract.classes

    @property
    def needs_masked_input(self) -> bool:
        """Whether the model takes the HSV-masked image as a second input."""
        return self._masked_input is not None

    def preprocess(self, source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """Path, bytes or RGB array -> (image, masked image) as this model wants them."""
        return preprocess(source, self.spec)

    def predict(self, source: ImageSource) -> Prediction:
        """Classify one image (path, encoded bytes, or RGB uint8 array).

        Raises:
            ImageError: the image cannot be used; the message names it and says why.
        """
        image, masked = self.preprocess(source)
        return self.predict_arrays(image[None], masked[None])[0]

    def predict_batch(self, sources: Iterable[ImageSource], batch_size: int = 16) -> list[Prediction]:
        """Classify several images, ``batch_size`` per model run; results in input order.

        Raises:
            ImageError: on the first image that cannot be used (see
                :func:`~leukedge.runtime.pipeline.classify_files` to get an error per image instead).
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = list(sources)
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            images, masked = preprocess_batch(items[start:start + batch_size], self.spec)
            out.extend(self.predict_arrays(images, masked))
        return out

    def predict_arrays(self, images: np.ndarray, masked: Optional[np.ndarray] = None) -> list[Prediction]:
        """Classify already-preprocessed inputs (float NxHxWx3 each, from ``preprocess``)."""
        probs = self.probabilities(images, masked)
        return [self._prediction(row) for row in probs]

    def probabilities(self, images: np.ndarray, masked: Optional[np.ndarray] = None) -> np.ndarray:
        """Raw model output for preprocessed inputs: float32 N x len(classes)."""
        self._check_batch("images", images)
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        feeds = {self._image_input.name: np.ascontiguousarray(images, self._image_input.dtype)}
        if self._masked_input is not None:
            if masked is None:
                raise ValueError(f"{self.model_path.name} takes a masked image input "
                                 f"({self._masked_input.name!r}); pass `masked` from preprocess()")
            self._check_batch("masked", masked, len(images))
            feeds[self._masked_input.name] = np.ascontiguousarray(masked, self._masked_input.dtype)
        (out,) = self._session.run([self._output], feeds)
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return (f"Classifier(model={str(self.model_path)!r}, provider={self.session_info.provider!r}, "
                f"classes={list(self.classes)}, review_below={self.review_below})")

    # -- construction helpers ---------------------------------------------------------------
    def _bind_input(self, content: str, required: bool) -> Optional[_InputBinding]:
        spec = self.contract.input_for(content)
        if spec is None:
            if required:  # ModelContract.validate already insists on it; keep the guard explicit
                raise ContractError(f"{self.model_path}: contract has no '{content}' input")
            return None
        declared = {node.name: node for node in self._session.get_inputs()}
        node = declared.get(spec.name)
        if node is None:
            raise ContractError(
                f"{self.model_path}: contract input {spec.name!r} ({content}) is not an input of "
                f"the model (model inputs: {', '.join(declared)})")
        dtype = _INPUT_DTYPES.get(node.type)
        if dtype is None:
            raise ContractError(f"{self.model_path}: input {node.name!r} has type {node.type}; "
                                f"valid: {', '.join(_INPUT_DTYPES)}")
        self._check_input_shape(node.name, list(node.shape))
        return _InputBinding(node.name, dtype)

    def _check_input_shape(self, name: str, shape: list) -> None:
        h, w = self.spec.input_size
        expected = [None, h, w, 3]
        fixed_mismatch = len(shape) != 4 or any(
            isinstance(got, int) and want is not None and got != want
            for got, want in zip(shape, expected))
        if fixed_mismatch:
            raise ContractError(
                f"{self.model_path}: input {name!r} has shape {shape}, but the contract's "
                f"preprocessing gives [N, {h}, {w}, 3] (NHWC)")

    def _check_unbound_inputs(self) -> None:
        bound = {b.name for b in (self._image_input, self._masked_input) if b is not None}
        extra = [node.name for node in self._session.get_inputs() if node.name not in bound]
        if extra:
            raise ContractError(f"{self.model_path}: model inputs {extra} are not described by "
                                f"its contract (contract inputs: {sorted(bound)})")

    def _check_output(self) -> str:
        names = [node.name for node in self._session.get_outputs()]
        if self.contract.output_name not in names:
            raise ContractError(f"{self.model_path}: contract output {self.contract.output_name!r} "
                                f"is not an output of the model (outputs: {', '.join(names)})")
        return self.contract.output_name

    def _warm_up(self) -> None:
        """One run on a blank image: allocates buffers and checks the output's shape."""
        h, w = self.spec.input_size
        blank = np.zeros((1, h, w, 3), np.float32)
        probs = self.probabilities(blank, blank)
        if probs.shape != (1, len(self.classes)):
            raise ContractError(
                f"{self.model_path}: output {self._output!r} has shape {list(probs.shape[1:])} per "
                f"image, but the contract lists {len(self.classes)} classes {list(self.classes)}")

    # -- per-call helpers (no state) ------------------------------------------------------------
    def _check_batch(self, what: str, arr: np.ndarray, n: Optional[int] = None) -> None:
        h, w = self.spec.input_size
        if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
            got = getattr(arr, "shape", type(arr).__name__)
            raise ValueError(f"{what} must be an N x {h} x {w} x 3 array, got {got}")
        if n is not None and len(arr) != n:
            raise ValueError(f"{what} has {len(arr)} images, images has {n}")

    def _prediction(self, row: np.ndarray) -> Prediction:
        k = int(np.argmax(row))
        confidence = float(row[k])
        probabilities = {name: float(p) for name, p in zip(self.classes, row)}
        # `not >=` so a NaN confidence (a broken model) is flagged for review, never trusted.
        needs_review = not confidence >= self.review_below
        return Prediction(self.classes[k], confidence, probabilities, needs_review)
