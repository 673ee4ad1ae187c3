"""Writing a training run folder's files (their names: :mod:`leukedge.modelkit.run_folder`),
each atomically: a reader never sees half a file, each goes to a temp file in the same folder
first, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from leukedge.runtime.files import atomic_write_bytes, atomic_write_text


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Atomically write ``data`` as indented JSON (numpy values converted)."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=1) + "\n")


def save_keras_model(model, path: str | os.PathLike) -> None:
    """``model.save`` to a temp ``.keras`` file in the target folder, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_history(history: dict, path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy curves (train and validation) as a PNG, with matplotlib's Agg backend."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), dpi=100)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def predictions_table(relpaths: Sequence[str], classes: Sequence[str], y_true: np.ndarray,
                      probs: np.ndarray) -> list[dict]:
    """Per-image predictions for metrics.json."""
    pred = probs.argmax(axis=1)
    return [{"path": p, "true": classes[t], "pred": classes[q],
             "probs": [round(float(v), 6) for v in row]}
            for p, t, q, row in zip(relpaths, y_true, pred, probs)]
