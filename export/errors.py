"""Errors raised by leukedge.export; each message says what went wrong and what to do next."""

from __future__ import annotations

from leukedge.runtime.errors import CheckRefused


class ExportError(CheckRefused, RuntimeError):
    """A Keras -> ONNX export did not produce a model we can trust."""


class ModelTooLargeError(ExportError):
    """The conversion would need more memory than this machine has available."""


class UnsupportedOpError(ExportError):
    """tf2onnx left operators in the graph that ONNX (and ONNX Runtime) do not know."""


class ParityError(ExportError):
    """The ONNX model's outputs differ from the reference model's beyond the tolerance."""


class QuantizationError(CheckRefused, RuntimeError):
    """Quantization failed or produced a model that does not run."""


class AccuracyGateError(QuantizationError):
    """The quantized model lost more accuracy (or added more cost) than allowed.

    Attributes:
        gate: the :class:`~leukedge.export.gate.GateResult` with both evaluations.
        offenders: per-node sensitivity rows (worst first), possibly empty.
        suggested_exclude: node names to try with ``--exclude-nodes``, possibly empty.
    """

    def __init__(self, message: str, gate=None, offenders=None, suggested_exclude=None):
        super().__init__(message)
        self.gate = gate
        self.offenders = list(offenders or [])
        self.suggested_exclude = list(suggested_exclude or [])
