"""leukedge runtime: decoding, the model contract and ONNX Runtime inference (no TensorFlow).

A leukedge model is one ONNX file that takes raw RGB pixels; this package decodes images
safely, runs the model through the one session door, and reads its contract.

Example:
    >>> from leukedge.runtime import Classifier
    >>> Classifier().predict("smear.jpg").label
    'Pre'
"""

from .classifier import Classifier, Prediction
from .contract import ContractError, ModelContract, read_contract
from .decode import ImageError, load_image
from .errors import LeukedgeError
from .models import ModelNotFoundError, bundled_models, default_model_path, resolve_model
from .preprocessing import HsvMaskSpec, PreprocessSpec
from .session import RuntimeSetupError, create_session

__all__ = [
    "Classifier", "Prediction",
    "ContractError", "ModelContract", "read_contract",
    "ImageError", "load_image", "LeukedgeError",
    "ModelNotFoundError", "bundled_models", "default_model_path", "resolve_model",
    "HsvMaskSpec", "PreprocessSpec",
    "RuntimeSetupError", "create_session",
]
