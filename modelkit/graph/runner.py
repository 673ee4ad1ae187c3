"""Run the preprocessing graph on its own: what training and calibration feed their networks.

The graph is built once per spec (:func:`~leukedge.modelkit.graph.preprocess.preprocess_model`)
and run through :func:`~leukedge.runtime.session.create_session`, the one door to ONNX Runtime,
so the pixels a network is trained on come from the very graph that the exported model carries.

Example:
    >>> run = PreprocessRunner(PreprocessSpec((224, 224), mean=(127.0,) * 3, std=(128.0,) * 3))
    >>> inputs = run(uint8_batch)          # {"image": float32 [N, 224, 224, 3], ...}
"""

from __future__ import annotations

from typing import Optional

import numpy as np

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

    def quality(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The input-quality measures (stain fraction, stain coverage, contrast) per image."""
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
