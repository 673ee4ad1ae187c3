"""Building blocks of the hybrid: backbone models, the U-Net-style segmentation block, the head.

The from-scratch parts (small CNN, segmentation block, head) use BatchNorm with momentum 0.9: a
probe with Keras' default 0.99 in the mask branch failed to train on this small dataset (the moving
statistics lag far behind the weights over the few hundred steps of a run).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import layers

from .backbones import CAFFE_MEAN_RGB, TORCH_MEAN, TORCH_STD, BackboneSpec
from .convertible import make_convertible
from .layers import InputNormalization
from .model import SEG_FILTERS

BN_MOMENTUM = 0.9
SMALL_CNN_FILTERS = (16, 32, 64, 128, 256)


def conv_bn_relu(x, filters: int, name: str):
    """3x3 convolution (no bias) -> BatchNorm(momentum 0.9) -> ReLU."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def small_cnn(input_shape: Sequence[int], filters: Sequence[int] = SMALL_CNN_FILTERS,
              weights: Optional[str] = None) -> keras.Model:
    """The from-scratch backbone: one Conv-BN-ReLU + 2x2 max-pooling block per filter count."""
    inputs = keras.Input(tuple(input_shape), name="small_cnn_input")
    x = inputs
    for i, f in enumerate(filters):
        x = conv_bn_relu(x, f, f"small_cnn_block{i + 1}")
        x = layers.MaxPooling2D(2, name=f"small_cnn_block{i + 1}_pool")(x)
    model = keras.Model(inputs, x, name="small_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model


def _normalization(row: BackboneSpec) -> Optional[layers.Layer]:
    if row.normalization == "torch":
        return InputNormalization(TORCH_MEAN, TORCH_STD, name="backbone_normalization")
    if row.normalization == "caffe":
        return InputNormalization(CAFFE_MEAN_RGB, (1.0, 1.0, 1.0), multiplier=255.0, bgr=True,
                                  name="backbone_normalization")
    return None


def backbone_model(row: BackboneSpec, input_shape: Sequence[int],
                   weights: Optional[str]) -> keras.Model:
    """The row's feature extractor (no top), frozen as the seed did when weights are loaded.

    Freezing only applies to loaded weights: freezing randomly initialised layers would fix
    random features.
    """
    if row.constructor == "small_cnn":
        return small_cnn(input_shape, weights=weights)
    constructor = getattr(keras.applications, row.constructor)
    base = constructor(include_top=False, weights=weights, input_shape=tuple(input_shape),
                       **dict(row.constructor_kwargs))
    base = make_convertible(base)  # convertible layers for tf2onnx (see convertible.py)
    if weights is not None:
        for layer in base.layers[:row.frozen_layers]:
            layer.trainable = False
    return base


def image_branch(image, row: BackboneSpec, weights: Optional[str]):
    """backbone(image) -> global average pooling, with the row's in-model normalization."""
    x = image
    norm = _normalization(row)
    if norm is not None:
        x = norm(x)
    base = backbone_model(row, tuple(image.shape[1:]), weights)
    return layers.GlobalAveragePooling2D(name="image_gap")(base(x))


def segmentation_block(masked, width: float = 1.0, depth: int = 4, name: str = "seg"):
    """U-Net-style block on the masked image (the seed's): its feature map.

    Encoder: ``depth`` levels of 2 Conv-BN-ReLU with ``SEG_FILTERS * width`` filters, 2x2
    max-pooling between levels. Decoder: a 2x2 transposed convolution one level up, concatenated
    with that level's skip connection, 2 Conv-BN-ReLU. At 224x224 input and full width the result
    is the seed's 56x56x128 map.
    """
    if not 2 <= depth <= len(SEG_FILTERS):
        raise ValueError(f"seg_depth must be 2..{len(SEG_FILTERS)}, got {depth}")
    if width <= 0:
        raise ValueError(f"seg_width must be positive, got {width}")
    filters = [max(4, int(round(f * width))) for f in SEG_FILTERS[:depth]]
    x, skips = masked, []
    for i, f in enumerate(filters):
        if i:
            x = layers.MaxPooling2D(2, name=f"{name}_enc{i + 1}_pool")(x)
        x = conv_bn_relu(conv_bn_relu(x, f, f"{name}_enc{i + 1}a"), f, f"{name}_enc{i + 1}b")
        skips.append(x)
    up = filters[-2]
    x = layers.Conv2DTranspose(up, 2, strides=2, padding="same", name=f"{name}_dec_up")(x)
    x = layers.Concatenate(name=f"{name}_dec_concat")([x, skips[-2]])
    return conv_bn_relu(conv_bn_relu(x, up, f"{name}_dec_a"), up, f"{name}_dec_b")


def classification_head(x, num_classes: int, units: Sequence[int], dropout: float, l2: float):
    """Dense -> BatchNorm -> Dropout per entry of ``units`` (ReLU, L2), then a softmax ``probs``."""
    reg = keras.regularizers.L2(l2) if l2 else None
    for i, u in enumerate(units):
        x = layers.Dense(u, activation="relu", kernel_regularizer=reg, name=f"head_dense{i + 1}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"head_bn{i + 1}")(x)
        x = layers.Dropout(dropout, name=f"head_dropout{i + 1}")(x)
    return layers.Dense(num_classes, activation="softmax", name="probs")(x)
