"""Run the preprocessing graph on its own: what training and calibration feed their networks.

The graph is built once per spec (:func:`~leukedge.modelkit.graph.preprocess.preprocess_model`)
and run through :func:`~leukedge.runtime.session.create_session`, the one door to ONNX Runtime,
so the pixels a network is trained on come from the very graph that the exported model carries.

Example:
    >>> run = PreprocessRunner(PreprocessSpec((224, 224), mean=(127.0,) * 3, std=(128.0,) * 3))
    >>> inputs = run(uint8_batch)          # {"image": float32 [N, 224, 224, 3], ...}
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from leukedge.runtime.batching import model_runs
from leukedge.runtime.preprocessing import PreprocessSpec
from leukedge.runtime.session import create_session

from .preprocess import (INPUT, NET_IMAGE, NET_MASKED, QUALITY_OUTPUTS, STAIN_MASK,
                         preprocess_model)


class PreprocessRunner:
    """The preprocessing graph of ``spec`` as a callable on uint8 RGB batches.

    Args:
        spec: the model's preprocessing.
        threads: ONNX Runtime intra-op threads (None: the CPUs this process may use).

    Calling it with a uint8 array [N, H, W, 3] (one size per call) returns the network inputs
    by the network's input names: ``image`` and, for hybrid models, ``masked_image``.
    """

    def __init__(self, spec: PreprocessSpec, threads: Optional[int] = None):
        self.spec = spec
        model = preprocess_model(spec)
        self._session, _ = create_session(model.SerializeToString(), provider="cpu",
                                          threads=threads)
        self._outputs = [NET_IMAGE] + ([NET_MASKED] if spec.masked_input else [])

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = _check_batch(images)
        out = self._session.run(self._outputs, {INPUT: batch})
        names = ["image", "masked_image"][:len(out)]
        return dict(zip(names, out))

    def measures(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The input-check measures (stain fraction, stain coverage, contrast) per image."""
        out = self._session.run(list(QUALITY_OUTPUTS), {INPUT: _check_batch(images)})
        return dict(zip(QUALITY_OUTPUTS, out))

    def mask(self, images: np.ndarray) -> np.ndarray:
        """The stain mask (uint8 [N, h, w], 1 = stained) at the model's input size."""
        return self._session.run([STAIN_MASK], {INPUT: _check_batch(images)})[0]


def _check_batch(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images [N, H, W, 3], got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def network_logits(model: Any, images: Sequence[np.ndarray], runner: PreprocessRunner,
                   batch_size: int = 32) -> np.ndarray:
    """float32 [N, classes] logits of a network behind its preprocessing graph, for uint8 RGB
    images of any sizes (runs by size within the pixel budget), in input order.

    The one place a network that is not yet a one-file model is run on pixels: training's
    validation and test predictions, cross-validation, export's parity reference and
    ``compare --keras``. ``model`` is a Keras model (called with ``training=False``) or has a
    ``logits`` method (the SVM and XGBoost rows, whose logits are log-probabilities); no
    TensorFlow is imported here.
    """
    classical = hasattr(model, "logits")
    if not len(images):
        classes = 0 if classical else int(model.output.shape[-1])
        return np.zeros((0, classes), np.float32)
    parts: dict[int, np.ndarray] = {}
    for indices, batch in model_runs(images, batch_size):
        x = runner(batch)
        out = model.logits(x) if classical else model(x, training=False)
        parts.update(zip(indices, np.asarray(out, np.float32)))
    return np.stack([parts[i] for i in range(len(images))])
