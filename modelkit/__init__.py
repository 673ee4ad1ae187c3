"""leukedge modelkit: what builds, checks and scores models, shared by training and export.

The graphs every leukedge ONNX file carries and their builders (``graph/``), labelled datasets,
duplicate groups and splits, metrics and confidence calibration, the run record, and evaluation
(comparison, benchmarks, the scores a lab reads). It imports the runtime, never TensorFlow;
``train`` and ``export`` import it, and the runtime (what the microscope PC runs to classify)
never does. Building a graph needs ``onnx`` (``[train]`` or ``[dev]``); the rest needs only
what the runtime needs, so `leukedge compare` and `leukedge bench` run on a ``[cpu]`` install.
"""
