"""Custom Keras layers of leukedge models, registered so a saved ``.keras`` file reloads.

All of them are written with ops that tf2onnx converts: elementwise arithmetic,
``Gather`` and ``Erf``.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="leukedge")
class InputNormalization(keras.layers.Layer):
    """Per-channel ``(x * multiplier - mean) / std``, optionally RGB -> BGR first.

    Brings the contract's input scaling to what a pretrained backbone was trained on, e.g.
    DenseNet's "torch" mode on [0, 1] pixels, or VGG16's "caffe" mode (BGR, 0-255, mean
    subtracted) with ``multiplier=255, bgr=True``.

    Example:
        >>> norm = InputNormalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], multiplier: float = 1.0,
                 bgr: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.multiplier = float(multiplier)
        self.bgr = bool(bgr)

    def call(self, inputs):
        x = inputs
        if self.bgr:
            x = ops.take(x, [2, 1, 0], axis=-1)
        mean = ops.convert_to_tensor(self.mean[::-1] if self.bgr else self.mean, dtype=x.dtype)
        std = ops.convert_to_tensor(self.std[::-1] if self.bgr else self.std, dtype=x.dtype)
        return (x * self.multiplier - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std,
                "multiplier": self.multiplier, "bgr": self.bgr}


@keras.saving.register_keras_serializable(package="leukedge")
class ErfGelu(keras.layers.Layer):
    """Exact GELU as ``0.5 * x * (1 + erf(x / sqrt(2)))``.

    TensorFlow's exact GELU uses ``Erfc``, which ONNX lacks; ``Erf`` converts.
    """

    def call(self, inputs):
        return 0.5 * inputs * (1.0 + ops.erf(inputs * (1.0 / math.sqrt(2.0))))

    def compute_output_shape(self, input_shape):
        return input_shape
