"""The one error base of leukedge: every error a user can cause or fix is a :class:`LeukedgeError`.

Each subclass also derives from the built-in type it refines (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so code that catches those keeps working, and a
command catches ``LeukedgeError`` once instead of five types. Messages name the file or the
option at fault and say what to do.
"""

from __future__ import annotations


class LeukedgeError(Exception):
    """Base of every leukedge error that is the input's or the setup's fault, not a bug."""


class CheckRefused(LeukedgeError):
    """The work was done, and a check refused its result (export parity, the quantization
    gate): the command exits 1, where an error the user fixes before rerunning exits 2."""
