"""leukedge runtime: preprocessing, model contract and ONNX Runtime inference (no TensorFlow)."""

from .classifier import Classifier, Prediction
from .contract import ContractError, ModelContract, read_contract
from .models import ModelNotFoundError, default_model_path
from .preprocess import ImageError, PreprocessSpec, HsvMaskSpec, load_image, preprocess
from .session import RuntimeSetupError, create_session

__all__ = [
    "Classifier", "Prediction",
    "ContractError", "ModelContract", "read_contract",
    "ModelNotFoundError", "default_model_path",
    "ImageError", "PreprocessSpec", "HsvMaskSpec", "load_image", "preprocess",
    "RuntimeSetupError", "create_session",
]
