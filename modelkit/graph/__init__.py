"""The graphs inside every leukedge ONNX model (preprocessing in front of the network,
calibrated probabilities and input checks behind it) and how they are joined.

Building a graph needs the ``onnx`` package (``[train]`` or ``[dev]``); running one needs only
onnxruntime. Nothing here is imported by ``import leukedge.runtime``.
"""
