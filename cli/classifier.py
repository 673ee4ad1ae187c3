"""Opening the model for the commands that classify (infer, watch, serve).

One helper so the three say the same things: the Classifier, or exit 2 with the reason (never a
traceback) when the model is unusable; the runtime's warnings (an INT8 file on a CPU without
VNNI, a provider fallback) on stderr.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import typer

from .errors import reported


def open_classifier(model: Optional[str], provider: str, threads: Optional[int],
                    review_below: Optional[float]) -> Any:
    """The Classifier, or exit 2 with the reason when the model is unusable."""
    from leukedge.runtime.classifier import Classifier

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with reported(ValueError):
            classifier = Classifier(model, provider=provider, threads=threads,
                                    review_below=review_below)
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)):
            typer.echo(f"Warning: {w.message}", err=True)
    return classifier
