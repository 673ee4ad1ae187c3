"""``leukedge bench``: how fast a model runs here, preprocessing timed apart, machine described.

Runtime-only dependencies (numpy, OpenCV, onnxruntime): it runs on the microscope PC itself.
The model runs through :class:`leukedge.runtime.classifier.Classifier`, the embedding API, so the
numbers are what an application gets.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.runtime.classifier import Classifier
from leukedge.runtime.preprocess import PreprocessSpec, list_images, load_image, preprocess_array

from .machine import describe_machine, machine_line
from .parity import synthetic_images
from .timing import batch_of, percentiles_ms, time_calls

DEFAULT_BATCH_SIZES = (1, 8, 32)
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "runtime" / "assets" / "samples"
MAX_IMAGES = 32


def bench_sources(images: Optional[Sequence[str | os.PathLike]], input_size) -> tuple[list, str]:
    """Images to time: the given files/folders, else the bundled samples, else synthetic ones."""
    if images:
        found = list_images(list(images), recursive=True)
        if not found:
            raise ValueError(f"No image found in {[str(i) for i in images]}")
        return found[:MAX_IMAGES], f"{len(found[:MAX_IMAGES])} given images"
    samples = list_images([SAMPLES_DIR], recursive=True) if SAMPLES_DIR.is_dir() else []
    if samples:
        return samples[:MAX_IMAGES], f"{len(samples[:MAX_IMAGES])} bundled sample images"
    return synthetic_images(8, (480, 640)), "8 synthetic 640x480 images (no real image given)"


def time_preprocessing(sources: Sequence, spec: PreprocessSpec, with_mask: bool = True
                       ) -> tuple[dict, np.ndarray, Optional[np.ndarray]]:
    """Per-image decode and preprocessing times (ms, median), and the preprocessed arrays.

    ``with_mask=False`` (a model without a masked input) times what the runtime does for it: no
    HSV mask; the masked array is then None.
    """
    decode, prep, images, masked = [], [], [], []
    for source in sources:
        t0 = time.perf_counter()
        rgb = load_image(source)
        t1 = time.perf_counter()
        image, mask = preprocess_array(rgb, spec, with_mask=with_mask)
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        prep.append(t2 - t1)
        images.append(image)
        masked.append(mask)
    stats = {"images": len(images), "decode_p50_ms": float(np.median(decode) * 1e3),
             "resize_mask_p50_ms": float(np.median(prep) * 1e3),
             "total_p50_ms": float(np.median(np.add(decode, prep)) * 1e3)}
    return stats, np.stack(images), np.stack(masked) if with_mask else None


def time_batches(clf: Classifier, images: np.ndarray, masked: Optional[np.ndarray],
                 batch_sizes: Sequence[int], iterations: int, warmup: int) -> list[dict]:
    """Latency percentiles and throughput of ``clf.probabilities`` per batch size."""
    rows = []
    for size in batch_sizes:
        x = batch_of(images, size)
        m = None if masked is None else batch_of(masked, size)
        times = time_calls(lambda: clf.probabilities(x, m), iterations, warmup)
        rows.append({"batch_size": int(size), "iterations": iterations, "warmup": warmup,
                     **percentiles_ms(times, (50, 90, 99)), "mean_ms": float(times.mean() * 1e3),
                     "throughput_ips": float(size / times.mean()),
                     "per_image_ms": float(times.mean() * 1e3 / size)})
    return rows


def bench_model(model_path: str | os.PathLike, *, provider: str = "auto",
                batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, threads: Optional[int] = None,
                iterations: int = 30, warmup: int = 3,
                images: Optional[Sequence[str | os.PathLike]] = None) -> dict:
    """Benchmark one ONNX model; returns a JSON-ready dict (see ``leukedge bench --format json``).

    Example:
        >>> result = bench_model("model-int8.onnx", batch_sizes=(1, 8), iterations=20)
        >>> result["batches"][0]["p50_ms"]
        29.4
    """
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    clf = Classifier(model_path, provider=provider, threads=threads)
    sources, where = bench_sources(images, clf.spec.input_size)
    prep, arr, masked = time_preprocessing(sources, clf.spec, clf.needs_masked_input)
    info = clf.session_info
    return {
        "model": str(model_path), "size_bytes": Path(model_path).stat().st_size,
        "precision": clf.contract.precision, "backbone": clf.contract.backbone,
        "input_size": list(clf.spec.input_size),
        "provider": info.provider, "providers": list(info.providers),
        "requested_provider": info.requested, "fell_back": info.fell_back,
        "threads": {"intra_op": info.intra_op_threads, "inter_op": info.inter_op_threads},
        "image_source": where, "preprocessing": prep,
        "batches": time_batches(clf, arr, masked, batch_sizes, iterations, warmup),
        "machine": describe_machine(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def format_bench_table(result: dict) -> str:
    """A plain-text table of a :func:`bench_model` result."""
    head = (f"{result['model']}  ({result['precision']}, {result['size_bytes'] / 1e6:.1f} MB, "
            f"input {result['input_size'][0]}x{result['input_size'][1]})\n"
            f"provider {result['provider']} {result['providers']}, threads intra "
            f"{result['threads']['intra_op']} / inter {result['threads']['inter_op']}\n")
    lines = [f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>9} {'ms/img':>8}"]
    for b in result["batches"]:
        lines.append(f"{b['batch_size']:>5} {b['p50_ms']:>9.2f} {b['p90_ms']:>9.2f} "
                     f"{b['p99_ms']:>9.2f} {b['throughput_ips']:>9.1f} {b['per_image_ms']:>8.2f}")
    p = result["preprocessing"]
    tail = (f"preprocessing per image (not in the numbers above; {result['image_source']}): decode "
            f"{p['decode_p50_ms']:.2f} ms + resize/mask {p['resize_mask_p50_ms']:.2f} ms = "
            f"{p['total_p50_ms']:.2f} ms (median)\nmachine: {machine_line(result['machine'])}")
    return head + "\n".join(lines) + "\n" + tail
