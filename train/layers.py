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
    """Per-channel ``(x - mean) / std`` with the constants inside the graph.

    Stands in for Keras' ``Normalization`` layers (ConvNeXt's and EfficientNet's built-in
    input normalization), whose eager mean and variance tf2onnx turns into graph inputs
    (:mod:`leukedge.train.convertible`).

    Example:
        >>> norm = InputNormalization(mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    @classmethod
    def from_config(cls, config: dict):
        """Also reads files saved before 0.3, whose layers carried an identity ``multiplier``
        and ``bgr``."""
        config = dict(config)
        if config.pop("multiplier", 1.0) != 1.0 or config.pop("bgr", False):
            raise ValueError("InputNormalization with a multiplier or BGR order is no longer "
                             "supported; retrain or re-export the model with leukedge >= 0.3")
        return cls(**config)

    def call(self, inputs):
        mean = ops.convert_to_tensor(self.mean, dtype=inputs.dtype)
        std = ops.convert_to_tensor(self.std, dtype=inputs.dtype)
        return (inputs - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="leukedge")
class ErfGelu(keras.layers.Layer):
    """Exact GELU as ``0.5 * x * (1 + erf(x / sqrt(2)))``.

    TensorFlow's exact GELU uses ``Erfc``, which ONNX lacks; ``Erf`` converts.
    """

    def call(self, inputs):
        return 0.5 * inputs * (1.0 + ops.erf(inputs * (1.0 / math.sqrt(2.0))))

    def compute_output_shape(self, input_shape):
        return input_shape
