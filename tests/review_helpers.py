"""Shared by the review station's tests: smear-like images, a results file made by running a
tiny model over them with `leukedge infer`, and an in-process ASGI caller."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from typer.testing import CliRunner

from leukedge.cli.main import app as cli_app

from asgi_helpers import asgi_request

PORT = 8766
OURS = f"127.0.0.1:{PORT}"


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` PNGs with a purple blob on noise, each a different colour mix, so the tiny
    model's confidences differ."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        image[8:30, 10:40] = (rng.integers(40, 200), 40, rng.integers(60, 220))  # BGR
        path = folder / f"smear{i:02d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def infer_results(model: "Path | str", images: list[Path], out: Path, fmt: str = "json",
                  overlay_dir: Optional[Path] = None) -> Path:
    """The results file `leukedge infer` writes for ``images`` (absolute paths)."""
    args = ["infer", *map(str, images), "--model", str(model), "--format", fmt, "--output",
            str(out), "--review-below", "1.0"]
    if overlay_dir is not None:
        args += ["--overlay-dir", str(overlay_dir)]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    return out


def call(app, method: str, path: str, headers: Optional[dict] = None, body: bytes = b"",
         query: str = "") -> tuple[int, object, dict]:
    """(status, body: JSON when it is JSON else bytes, headers) of one request, in process."""
    return asyncio.run(_call(app, method, path, headers, body, query))


async def _call(app, method, path, headers, body, query):
    headers = {"host": OURS, **(headers or {})}
    status, data, answer = await asgi_request(app, method, path, headers, body, query,
                                              port=PORT)
    if answer.get("content-type", "").startswith("application/json"):
        return status, json.loads(data), answer
    return status, data, answer


def decide(app, path: str, label: str, reviewer: Optional[str] = "Dr. A", **extra):
    body = {"path": path, "label": label, **extra}
    if reviewer is not None:
        body["reviewer"] = reviewer
    return call(app, "POST", "/v1/review/decision", {"content-type": "application/json"},
                json.dumps(body).encode())
