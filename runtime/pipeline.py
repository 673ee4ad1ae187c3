"""Classify many files with one result per file: bad inputs become error results, never exceptions.

:func:`classify_files` has worker threads that each decode and classify whole batches (OpenCV
and ONNX Runtime release the GIL), several batches in flight, and yields results in input order.
A single-threaded CPU session takes a batch a few images at a time (:func:`run_images`).
``leukedge infer`` is a thin layer over it; an embedding application can use it the same way to
process a folder.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import time

import numpy as np

from .batching import PIXEL_BUDGET, PixelBudget, pixels_of
from .classifier import Classifier, ImageRun, Prediction
from .decode import (MAX_PIXELS, ImageError, ImageSource, decode_inspected, describe_source,
                     inspect_image, load_image, read_file_bytes)
from .input_checks import ReviewReason
from .session import usable_cpus


MAX_WORKERS = 8
UNREADABLE = ReviewReason("unreadable", "could not be classified").to_dict()


def default_workers(classifier: Optional[Classifier] = None) -> int:
    """Batches in flight: one per group of the session's intra-op threads that fits in the CPUs
    this process may use, at least 2 (so that reading one batch overlaps the model run of another),
    at most ``MAX_WORKERS``.

    Measured on 2 shared cores (650 real smears, batch 16, in-process images/s, 3 repeats): the
    first default model (FP32) gave 226-247 with one 2-thread session and one preprocessing thread
    working a batch ahead (this module's earlier design), and 295-300 with single-threaded
    sessions and 2 whole-batch workers; its INT8 file 184-204 against 253-309. ONNX Runtime's
    intra-op parallelism scales poorly on these small convolutions; whole batches side by side do
    not share anything. Hence ``leukedge infer`` opens single-threaded sessions for folders.
    """
    per_run = classifier.session_info.intra_op_threads if classifier is not None else 1
    return max(2, min(MAX_WORKERS, usable_cpus() // max(1, per_run)))


@dataclass(frozen=True)
class FileResult:
    """The outcome for one input: a prediction or an error message naming the input.

    ``image`` (the decoded RGB uint8 image at its original resolution) and ``mask`` (the
    model's stain mask at its input size) are kept only on request, to draw an overlay.
    ``seconds`` is this image's decoding time plus its share of its batch's model run.
    """

    source: str
    prediction: Optional[Prediction] = None
    error: Optional[str] = None
    image: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """path, label, confidence, probabilities, needs_review, review_reasons (code and
        message each), input_checks, seconds, error. An input that could not be classified
        needs review."""
        p = self.prediction
        return {
            "path": self.source,
            "label": p.label if p else None,
            "confidence": p.confidence if p else None,
            "probabilities": dict(p.probabilities) if p else None,
            "needs_review": p.needs_review if p else True,
            "review_reasons": [r.to_dict() for r in p.review_reasons] if p else [UNREADABLE],
            "input_checks": dict(p.input_checks) if p else None,
            "seconds": round(self.seconds, 6),
            "error": self.error,
        }


@dataclass(frozen=True)
class _Decoded:
    pixels: Optional[np.ndarray] = None
    error: Optional[str] = None
    seconds: float = 0.0


def _error(source: ImageSource, e: Exception) -> _Decoded:
    if isinstance(e, ImageError):
        return _Decoded(error=str(e))
    # an odd file must not stop a batch of 600; name it and go on
    return _Decoded(error=str(ImageError(describe_source(source),
                                         f"cannot be processed ({type(e).__name__}: {e})")))


def _inspect(source: ImageSource, max_pixels: int) -> tuple[object, int]:
    """(what to decode, pixels its decode will hold), read from the header before decoding."""
    if isinstance(source, np.ndarray):
        return source, pixels_of(source.shape) if source.ndim >= 2 else 0
    name = describe_source(source)
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) \
        else read_file_bytes(source)
    width, height = inspect_image(data, name, max_pixels)
    return data, width * height


def _decode(source: ImageSource, content: object) -> np.ndarray:
    """The pixels of what :func:`_inspect` passed (its checks are not run again)."""
    if isinstance(content, np.ndarray):
        return load_image(content)
    return decode_inspected(content, describe_source(source))


def _classify(classifier: Classifier, decoded: dict[int, _Decoded], keep_images: bool,
              max_images: int, pixel_budget: int) -> dict[int, ImageRun]:
    """Predictions (and masks) of the decoded images, by
    :meth:`~leukedge.runtime.classifier.Classifier.predict_runs`."""
    keys = list(decoded)
    runs = classifier.predict_runs([decoded[k].pixels for k in keys], keep_images, max_images,
                                   pixel_budget)
    return dict(zip(keys, runs))


def _results(classifier: Classifier, sources: Sequence[ImageSource], decoded: dict[int, _Decoded],
             keep_images: bool, max_images: int, pixel_budget: int) -> Iterator[FileResult]:
    """One model pass over ``decoded`` (index -> image or error), results in index order."""
    ok = {i: d for i, d in decoded.items() if d.error is None}
    try:
        done = _classify(classifier, ok, keep_images, max_images, pixel_budget)
    except Exception as e:  # the model failed on this batch: every image of it gets the error
        reason = f"the model failed on this batch ({type(e).__name__}: {str(e)[:200]})"
        done, decoded = {}, {i: d if d.error else _Decoded(error=reason)
                             for i, d in decoded.items()}
    for i in sorted(decoded):
        d, name = decoded[i], describe_source(sources[i])
        if d.error is not None:
            yield FileResult(name, error=d.error if d.error.startswith(name) else
                             f"{name}: {d.error}")
            continue
        run = done[i]
        yield FileResult(name, prediction=run.prediction,
                         image=d.pixels if keep_images else None, mask=run.mask,
                         seconds=d.seconds + run.seconds)


def run_images(classifier: Classifier, batch_size: int) -> int:
    """Images per model run for a batch: the classifier's :attr:`~Classifier.run_images` (a few
    for a single-threaded CPU session, where cache-sized runs are faster), at most the whole
    batch."""
    return min(batch_size, classifier.run_images)


def _process(classifier: Classifier, batch: Sequence[ImageSource], keep_images: bool,
             max_pixels: int, budget: PixelBudget) -> Iterator[FileResult]:
    """Read, check, decode and classify one batch, holding at most ``budget``'s pixels.

    Each image's pixels are counted from its header and acquired before it is decoded. When
    they do not fit, the images decoded so far are classified and released first, so a thread
    never waits while it holds pixels (no deadlock between workers).
    """
    pending: dict[int, _Decoded] = {}
    held = 0
    max_images = run_images(classifier, len(batch))
    for i, source in enumerate(batch):
        started = time.perf_counter()
        try:
            content, pixels = _inspect(source, max_pixels)
        except Exception as e:
            pending[i] = _error(source, e)
            continue
        got = budget.try_acquire(pixels)
        if got is None:
            yield from _results(classifier, batch, pending, keep_images, max_images, budget.total)
            pending = {}
            budget.release(held)
            held, got = 0, budget.acquire(pixels)
        held += got
        try:
            pending[i] = _Decoded(pixels=_decode(source, content),
                                  seconds=time.perf_counter() - started)
        except Exception as e:
            pending[i] = _error(source, e)
        del content
    yield from _results(classifier, batch, pending, keep_images, max_images, budget.total)
    budget.release(held)


def classify_files(classifier: Classifier, sources: Iterable[ImageSource], batch_size: int = 16,
                   workers: Optional[int] = None, keep_images: bool = False,
                   max_pixels: int = MAX_PIXELS,
                   pixel_budget: int = PIXEL_BUDGET) -> Iterator[FileResult]:
    """Classify every source; yield one :class:`FileResult` per source, in input order.

    Memory is bounded by pixels, whatever the inputs: every image's size is read from its
    header before it is decoded, and the workers together hold at most ``pixel_budget`` decoded
    pixels (an image over it is decoded and run alone); model runs are planned by
    :func:`~leukedge.runtime.batching.plan_runs`.

    Args:
        classifier: the model (shared by the workers; it is thread-safe).
        sources: paths, bytes or RGB arrays.
        batch_size: images per model run at most (images of different sizes run separately,
            and large ones fewer at a time).
        workers: threads that each read, preprocess and classify whole batches, so that up to
            ``workers + 1`` batches are queued; 0 = everything inline in the calling thread;
            None = :func:`default_workers`. For throughput on a CPU, give the classifier
            ``threads=1`` and one worker per core. With ``keep_images`` the batches run inline
            (the kept images then stay within the budget until the caller takes them).
        keep_images: keep each decoded original image and the model's stain mask in its
            result (for overlays).
        max_pixels: refuse images whose header declares more pixels than this.
        pixel_budget: decoded pixels held at once by all workers together.

    Example:
        >>> clf = Classifier(threads=1)
        >>> for r in classify_files(clf, find_images(["smears/"]).paths):
        ...     print(r.source, r.prediction.label if r.ok else r.error)
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_workers(classifier) if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    budget = PixelBudget(pixel_budget)
    items = list(sources)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    if workers == 0 or keep_images:
        for batch in batches:
            yield from _process(classifier, batch, keep_images, max_pixels, budget)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leukedge-batch")
    try:
        pending: deque[Future] = deque()
        for batch in batches:
            pending.append(pool.submit(lambda b: list(_process(classifier, b, keep_images,
                                                               max_pixels, budget)), batch))
            if len(pending) > workers:  # every worker has a batch: hand out the oldest results
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:  # also when the caller stops early: drop the queued batches, finish the running ones
        pool.shutdown(wait=True, cancel_futures=True)
