"""Keep TensorFlow's start-up chatter off a user's terminal, and its real warnings on it.

TensorFlow 2.21 writes lines such as "oneDNN custom operations are on", "Could not find cuda
drivers on your machine" and, on a CPU-only PC, "failed call to cuInit" from C++ before its
logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence them. The commands that load
TensorFlow (train, export, compare --keras) therefore route the process's native stderr through
a filter thread that drops exactly those known lines and passes everything else through;
Python's own stderr (leukedge's messages, warnings, tracebacks) is not touched.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import warnings
from typing import Optional

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|Number of eligible GPUs \(core count >= 8"
    r"|single_machine.cc:\d+\] Starting new session"
    r"|GPU will not be used")

_active: Optional["_Filter"] = None


class _Filter:
    def __init__(self) -> None:
        self.real = os.dup(2)
        read_end, write_end = os.pipe()
        sys.stderr.flush()
        os.dup2(write_end, 2)
        os.close(write_end)
        # Python keeps writing to the terminal directly.
        sys.stderr = os.fdopen(os.dup(self.real), "w", buffering=1, errors="backslashreplace")
        self.thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True,
                                       name="leukedge-native-stderr")
        self.thread.start()

    def _pump(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NOISE.search(line.decode("utf-8", "replace")):
                    os.write(self.real, line)

    def close(self) -> None:
        os.dup2(self.real, 2)  # closes the pipe's write end: the pump drains and stops
        self.thread.join(timeout=2)


def quiet_tensorflow() -> None:
    """Install the filter (once per process) and silence TensorFlow's Python-level noise."""
    global _active
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=r".*__array__ implementation doesn't accept a "
                                              r"copy keyword", category=DeprecationWarning)
    # Inside a test runner fd 2 belongs to its capture machinery: leave it alone there.
    if _active is None and hasattr(os, "dup2") and "PYTEST_CURRENT_TEST" not in os.environ:
        try:
            _active = _Filter()
        except OSError:  # no fd 2 (a service without stderr): nothing to filter
            return
        atexit.register(_active.close)
