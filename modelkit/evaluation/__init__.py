"""Evaluation on the runtime alone (numpy, OpenCV, onnxruntime): labelled sets, model comparison
and its reports, benchmarks, and the description of the machine every number was measured on.

Kept apart from the models and the conversion code, as validation and benchmarking are kept
apart from model code in timm; `leukedge compare` and `leukedge bench` run on a microscope PC.
"""
