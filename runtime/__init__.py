"""leukedge runtime: decoding, the model contract and ONNX Runtime inference (no TensorFlow).

A leukedge model is one ONNX file that takes raw RGB pixels; this package decodes images
safely, runs the model through the one session door, and reads its contract. Names are loaded
on first use, so importing one module (``leukedge.runtime.files``) does not load numpy, OpenCV
and ONNX Runtime: `leukedge --help` stays fast.

Example:
    >>> from leukedge.runtime import Classifier
    >>> Classifier().predict("smear.jpg").label
    'Pre'
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Classifier": ".classifier", "Prediction": ".classifier",
    "ContractError": ".contract", "ModelContract": ".contract", "read_contract": ".contract",
    "ImageError": ".decode", "load_image": ".decode", "LeukedgeError": ".errors",
    "ModelNotFoundError": ".models", "bundled_models": ".models",
    "default_model_path": ".models", "resolve_model": ".models",
    "HsvMaskSpec": ".preprocessing", "PreprocessSpec": ".preprocessing",
    "RuntimeSetupError": ".session", "create_session": ".session",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
