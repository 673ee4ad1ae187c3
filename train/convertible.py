"""Make Keras application backbones convertible by tf2onnx.

Three layer kinds of ``keras.applications`` models do not convert:

- ConvNeXt's depthwise 7x7 convolutions are grouped ``Conv2D`` layers (``groups == filters``),
  which the TensorFlow backend runs through an XLA-compiled function (``StatefulPartitionedCall``);
- ConvNeXt's exact GELU uses ``Erfc``, which ONNX lacks;
- ``Normalization`` layers (ConvNeXt's and EfficientNet's built-in input normalization) keep their
  mean and variance as eager tensors that ``tf.function`` captures; tf2onnx turns those captures
  into extra graph *inputs* the runtime cannot feed.

:func:`make_convertible` clones the model with ``DepthwiseConv2D`` (same weights, kernel axes
swapped), :class:`~leukedge.train.layers.ErfGelu` and
:class:`~leukedge.train.layers.InputNormalization` (constants inside the graph); every other layer
is reused as is, weights included.
"""

from __future__ import annotations

import keras
import numpy as np

from .layers import ErfGelu, InputNormalization


def _is_depthwise_group_conv(layer) -> bool:
    return (type(layer) is keras.layers.Conv2D and layer.groups > 1
            and layer.groups == layer.filters)


def _is_exact_gelu(layer) -> bool:
    return (type(layer) is keras.layers.Activation
            and getattr(layer.activation, "__name__", "") == "gelu")


def _constant_normalization(layer) -> InputNormalization:
    if layer.invert:
        raise ValueError(f"Cannot rewrite inverting Normalization layer {layer.name!r}")
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float64).reshape(-1)
    var = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float64).reshape(-1)
    if mean.size != 3 or var.size != 3:
        raise ValueError(f"Normalization layer {layer.name!r} is not per RGB channel "
                         f"(mean of {mean.size} values)")
    std = np.maximum(np.sqrt(var), keras.backend.epsilon())
    return InputNormalization(mean.tolist(), std.tolist(), name=layer.name)


def _replacement(layer):
    if _is_depthwise_group_conv(layer):
        return keras.layers.DepthwiseConv2D(layer.kernel_size, strides=layer.strides,
                                            padding=layer.padding, use_bias=layer.use_bias,
                                            name=layer.name)
    if _is_exact_gelu(layer):
        return ErfGelu(name=layer.name)
    if type(layer) is keras.layers.Normalization:
        return _constant_normalization(layer)
    return None


def _copy_depthwise_weights(old, new) -> None:
    kernel = keras.ops.convert_to_numpy(old.kernel)  # (kh, kw, 1, C)
    weights = [kernel.transpose(0, 1, 3, 2)]  # (kh, kw, C, 1)
    if old.use_bias:
        weights.append(keras.ops.convert_to_numpy(old.bias))
    new.set_weights(weights)


def make_convertible(model: keras.Model) -> keras.Model:
    """``model`` itself when nothing needs rewriting, else a rewritten copy (same outputs).

    Raises:
        ValueError: a grouped convolution that is not depthwise, or an odd Normalization layer.
    """
    grouped = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.groups > 1]
    odd = [l.name for l in grouped if not _is_depthwise_group_conv(l)]
    if odd:
        raise ValueError(f"Grouped convolutions that are not depthwise cannot be rewritten: {odd}")
    if not any(_replacement(l) is not None for l in model.layers):
        return model
    replaced = []

    def clone(layer):
        new = _replacement(layer)
        if new is None:
            return layer  # reused: keeps the original's weights
        replaced.append((layer, new))
        return new

    rewritten = keras.models.clone_model(model, clone_function=clone)
    for old, new in replaced:
        if isinstance(new, keras.layers.DepthwiseConv2D):
            _copy_depthwise_weights(old, new)
    return rewritten
