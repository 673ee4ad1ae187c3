"""leukedge runtime: preprocessing, model contract and ONNX Runtime inference (no TensorFlow)."""

from .contract import ContractError, ModelContract, read_contract
from .preprocess import ImageError, PreprocessSpec, HsvMaskSpec, load_image, preprocess
from .session import create_session

__all__ = [
    "ContractError", "ModelContract", "read_contract",
    "ImageError", "PreprocessSpec", "HsvMaskSpec", "load_image", "preprocess",
    "create_session",
]
