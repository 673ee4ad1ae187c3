"""Classify many files with one result per file: bad inputs become error results, never exceptions.

:func:`classify_files` decodes and preprocesses the next batch in a small thread pool while the
model runs on the current one (OpenCV and ONNX Runtime release the GIL), and yields results in
input order. ``leukedge infer`` is a thin layer over it; an embedding application can use it the same
way to process a folder.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from .classifier import Classifier, Prediction
from .preprocess import ImageError, ImageSource, describe_source, load_image, preprocess_array
from .session import usable_cpus


MAX_WORKERS = 8


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

    ``image`` is the decoded RGB uint8 image at its original resolution, kept only on request
    (e.g. to draw an overlay).
    """

    source: str
    prediction: Optional[Prediction] = None
    error: Optional[str] = None
    image: Optional[np.ndarray] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """path, label, confidence, probabilities, needs_review, error (None where not applicable)."""
        p = self.prediction
        return {
            "path": self.source,
            "label": p.label if p else None,
            "confidence": p.confidence if p else None,
            "probabilities": dict(p.probabilities) if p else None,
            "needs_review": p.needs_review if p else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class _Prepared:
    image: Optional[np.ndarray] = None
    masked: Optional[np.ndarray] = None
    original: Optional[np.ndarray] = None
    error: Optional[str] = None


def _prepare(classifier: Classifier, source: ImageSource, keep_image: bool) -> _Prepared:
    try:
        rgb = load_image(source)
        image, masked = preprocess_array(rgb, classifier.spec,
                                         with_mask=classifier.needs_masked_input)
    except ImageError as e:
        return _Prepared(error=str(e))
    except Exception as e:  # an odd file must not stop a batch of 600; name it and go on
        return _Prepared(error=str(ImageError(describe_source(source),
                                              f"cannot be processed ({type(e).__name__}: {e})")))
    return _Prepared(image=image, masked=masked, original=rgb if keep_image else None)


def _finish(classifier: Classifier, sources: Sequence[ImageSource],
            prepared: Sequence[_Prepared]) -> Iterator[FileResult]:
    good = [p for p in prepared if p.error is None]
    predictions: Iterator[Prediction] = iter(())
    if good:
        images = np.stack([p.image for p in good])
        masked = np.stack([p.masked for p in good]) if classifier.needs_masked_input else None
        predictions = iter(classifier.predict_arrays(images, masked))
    for source, prep in zip(sources, prepared):
        name = describe_source(source)
        if prep.error is not None:
            yield FileResult(name, error=prep.error)
        else:
            yield FileResult(name, prediction=next(predictions), image=prep.original)


def _process(classifier: Classifier, batch: Sequence[ImageSource], keep_images: bool
             ) -> list[FileResult]:
    return list(_finish(classifier, batch, [_prepare(classifier, s, keep_images) for s in batch]))


def classify_files(classifier: Classifier, sources: Iterable[ImageSource], batch_size: int = 16,
                   workers: Optional[int] = None, keep_images: bool = False) -> Iterator[FileResult]:
    """Classify every source; yield one :class:`FileResult` per source, in input order.

    Args:
        classifier: the model (shared by the workers; it is thread-safe).
        sources: paths, bytes or RGB arrays.
        batch_size: images per model run.
        workers: threads that each read, preprocess and classify whole batches, so that up to
            ``workers + 1`` batches are in flight; 0 = everything inline in the calling thread;
            None = :func:`default_workers`. For throughput on a CPU, give the classifier
            ``threads=1`` and one worker per core.
        keep_images: keep each decoded original image in its result (for overlays).

    Example:
        >>> clf = Classifier(threads=1)
        >>> for r in classify_files(clf, list_images(["smears/"])):
        ...     print(r.source, r.prediction.label if r.ok else r.error)
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_workers(classifier) if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    items = list(sources)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    if workers == 0:
        for batch in batches:
            yield from _process(classifier, batch, keep_images)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leukedge-batch")
    try:
        pending: deque[Future] = deque()
        for batch in batches:
            pending.append(pool.submit(_process, classifier, batch, keep_images))
            if len(pending) > workers:  # every worker has a batch: hand out the oldest results
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:  # also when the caller stops early: drop the queued batches, finish the running ones
        pool.shutdown(wait=True, cancel_futures=True)
