"""``leukedge bench``: how fast a model runs here, decoding timed apart, machine described.

Runtime-only dependencies (numpy, OpenCV, onnxruntime): it runs on the microscope PC itself.
The model runs through :class:`leukedge.runtime.classifier.Classifier`, the embedding API, on
decoded uint8 pixels, so each time includes the preprocessing inside the model: it is what an
application gets.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Optional, Sequence

import numpy as np

from leukedge.runtime.batching import PIXEL_BUDGET
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import find_images
from leukedge.runtime.models import SAMPLES_DIR

from .machine import describe_machine, machine_line
from .timing import batch_of, percentiles_ms, time_calls

DEFAULT_BATCH_SIZES = (1, 8, 32)
MAX_IMAGES = 32


def bench_sources(images: Optional[Sequence[str | os.PathLike]]) -> tuple[list, str]:
    """Images to time: the given files/folders, else the bundled samples."""
    if images:
        found = find_images(list(images), recursive=True).paths
        if not found:
            raise ValueError(f"--images: no image found in {[str(i) for i in images]}")
        return found[:MAX_IMAGES], f"{len(found[:MAX_IMAGES])} given images"
    samples = find_images([SAMPLES_DIR], recursive=True).paths if SAMPLES_DIR.is_dir() else []
    if not samples:
        raise ValueError("no bundled sample images in this installation; pass --images")
    return samples[:MAX_IMAGES], f"{len(samples[:MAX_IMAGES])} bundled sample images"


def time_decoding(sources: Sequence) -> tuple[dict, np.ndarray]:
    """Per-image decode time (ms, median) and the decoded pixels (images of the first size,
    as many as the pixel budget holds, at least one)."""
    times, same = [], []
    for source in sources:
        started = time.perf_counter()
        image = load_image(source)
        times.append(time.perf_counter() - started)
        first = same[0].shape if same else image.shape
        if image.shape == first and (not same or (len(same) + 1) * image.shape[0]
                                     * image.shape[1] <= PIXEL_BUDGET):
            same.append(image)
    return ({"images": len(times), "decode_p50_ms": float(np.median(times) * 1e3),
             "size": list(same[0].shape[:2])}, np.stack(same))


def check_batch_pixels(batch_sizes: Sequence[int], size: Sequence[int]) -> None:
    """ValueError naming --batch-sizes when one batch of images of ``size`` (height, width)
    would hold more than the pixel budget that bounds every model run."""
    height, width = size
    bound = max(1, PIXEL_BUDGET // (height * width))
    if max(batch_sizes) > bound:
        raise ValueError(f"--batch-sizes: {max(batch_sizes)} is over the bound of {bound} images "
                         f"for these {height}x{width} images (one run holds at most "
                         f"{PIXEL_BUDGET / 1e6:.0f} MP)")


def time_batches(clf: Classifier, pixels: np.ndarray, batch_sizes: Sequence[int],
                 iterations: int, warmup: int) -> list[dict]:
    """Latency percentiles and throughput of the model per batch size (raw pixels in)."""
    rows = []
    for size in batch_sizes:
        x = batch_of(pixels, size)
        times = time_calls(lambda: clf.run(x), iterations, warmup)
        rows.append({"batch_size": int(size), "iterations": iterations, "warmup": warmup,
                     **percentiles_ms(times, (50, 90, 99)), "mean_ms": float(times.mean() * 1e3),
                     "throughput_ips": float(size / times.mean()),
                     "per_image_ms": float(times.mean() * 1e3 / size)})
    return rows


def bench_model(model: str | os.PathLike | None, *, provider: str = "auto",
                batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, threads: Optional[int] = None,
                iterations: int = 30, warmup: int = 3,
                images: Optional[Sequence[str | os.PathLike]] = None) -> dict:
    """Benchmark one model (a path or a bundled name); returns a JSON-ready dict.

    Example:
        >>> result = bench_model("default", batch_sizes=(1, 8), iterations=20)
        >>> result["batches"][0]["p50_ms"]
        4.1
    """
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes must be >= 1, got {list(batch_sizes)}")
    if iterations < 1 or warmup < 0:
        raise ValueError(f"--iterations must be >= 1 and --warmup >= 0, got {iterations}, {warmup}")
    clf = Classifier(model, provider=provider, threads=threads)
    sources, where = bench_sources(images)
    decoding, pixels = time_decoding(sources)
    check_batch_pixels(batch_sizes, pixels.shape[1:3])
    info = clf.session_info
    return {
        "model": str(clf.model_path), "size_bytes": clf.model_path.stat().st_size,
        "precision": clf.contract.precision, "backbone": clf.contract.backbone,
        "input_size": list(clf.contract.preprocessing.input_size),
        "provider": info.provider, "providers": list(info.providers),
        "requested_provider": info.requested, "fell_back": info.fell_back,
        "threads": {"intra_op": info.intra_op_threads, "inter_op": info.inter_op_threads},
        "image_source": where, "decoding": decoding,
        "batches": time_batches(clf, pixels, batch_sizes, iterations, warmup),
        "machine": describe_machine(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def format_bench_table(result: dict) -> str:
    """A plain-text table of a :func:`bench_model` result."""
    h, w = result["decoding"]["size"]
    head = (f"{result['model']}  ({result['precision']}, {result['size_bytes'] / 1e6:.1f} MB, "
            f"network input {result['input_size'][0]}x{result['input_size'][1]}, "
            f"images {h}x{w})\n"
            f"provider {result['provider']} {result['providers']}, threads intra "
            f"{result['threads']['intra_op']} / inter {result['threads']['inter_op']}\n")
    lines = [f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>9} {'ms/img':>8}"]
    for b in result["batches"]:
        lines.append(f"{b['batch_size']:>5} {b['p50_ms']:>9.2f} {b['p90_ms']:>9.2f} "
                     f"{b['p99_ms']:>9.2f} {b['throughput_ips']:>9.1f} {b['per_image_ms']:>8.2f}")
    tail = (f"model times include its in-graph preprocessing; decoding ({result['image_source']}) "
            f"is extra: {result['decoding']['decode_p50_ms']:.2f} ms per image (median)\n"
            f"machine: {machine_line(result['machine'])}")
    return head + "\n".join(lines) + "\n" + tail
