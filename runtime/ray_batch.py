"""Classify an archive with Ray Data: actors that each hold one ONNX Runtime session classify
batches of paths, and the rows come back in input order, the rows a local run writes.

Each actor runs :func:`~leukedge.runtime.pipeline.classify_files` inline on one batch of the
local run's batches (the same consecutive ``batch_size`` inputs, so the same model runs), so a
file that cannot be read or decoded is an error row with the local run's message, never a
failed task. The actors read the files themselves: on a cluster every node must see the paths
under the same names (a shared folder) and have leukedge with an ONNX Runtime extra installed.
The model's bytes travel with the job, so the file need not be on the nodes.

ray is imported only inside these functions (``pip install 'leukedge[ray]'``).

Example:
    >>> connect("local")
    >>> rows = list(classify_on_ray(Classifier(threads=1), paths))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from .errors import LeukedgeError
from .session import usable_cpus

LOCAL = "local"  # --ray local: start Ray on this machine
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # only paths and rows travel, never pixels
# Ray 2.60 gives its raylet 30 s to register, which a PC busy with other work can miss
LOCAL_START_ATTEMPTS = 3
MAX_BLOCKS = 2000  # blocks of batches handed to the actors (each block goes to one actor)
# Batches per actor call at most (each actor still gets two calls or more): with one batch of
# 16 per call, Ray's per-call cost held 2 local actors to 206 images/s against 268 for a plain
# run on 2,600 images; with 8, 252 against 277 (bench/bench_ray.py, docs/scale.md)
BATCHES_PER_CALL = 8


class RaySetupError(LeukedgeError, RuntimeError):
    """Ray is missing, the cluster cannot be reached, or the Ray job failed."""


def load_ray() -> Any:
    """Import ray with Ray Data, or say which extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (needs pyarrow, which ray[data] brings)
    except ImportError as e:
        raise RaySetupError(f"--ray needs Ray Data ({e.name} is missing): "
                            "pip install 'leukedge[ray]'") from e
    return ray


def connect(address: str, num_cpus: Optional[int] = None) -> bool:
    """Start Ray on this machine (``"local"``, ``num_cpus`` CPUs: default all usable ones) or
    join the cluster at ``address`` ("auto", "ray://head:10001", "head:6379"); False when this
    process was already connected (nothing done)."""
    ray = load_ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING,
             "configure_logging": True}
    # Ray Data logs every stage (and that its progress bars are off) to the console; its full
    # logs stay in Ray's session folder (/tmp/ray/session_latest/logs)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            if address == LOCAL:
                ray.init(num_cpus=num_cpus or usable_cpus(),
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
            else:
                ray.init(address=address, **quiet)
            break
        except Exception as e:  # ConnectionError, ValueError, RuntimeError from ray
            ray.shutdown()  # what a failed start left running
            if address != LOCAL or "timed out" not in str(e) or attempt == LOCAL_START_ATTEMPTS:
                raise RaySetupError(f"--ray {address}: cannot start or reach Ray: "
                                    f"{_first_line(e)}") from e
    return True


def disconnect() -> None:
    """Leave the cluster (and stop a Ray started by ``connect("local")``)."""
    load_ray().shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


class ClassifyBatches:
    """A Ray Data actor: one Classifier (one ONNX Runtime session), one row per input.

    Each input row is a batch: ``start`` (the index of its first input) and ``paths`` (file
    names as bytes, so names that are not UTF-8 travel intact); each output row is ``start``
    and ``rows``, the JSON list of the batch's result rows.
    """

    def __init__(self, model: list, model_name: str, provider: str, threads: int,
                 review_below: float, max_pixels: int):
        import ray

        from .classifier import Classifier

        folder = Path(tempfile.mkdtemp(prefix="leukedge-ray-"))
        try:  # the session reads the file once; nothing else of the Classifier reads it here
            (folder / model_name).write_bytes(ray.get(model[0]))
            self.classifier = Classifier(folder / model_name, provider=provider,
                                         threads=threads, review_below=review_below)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict) -> dict:
        from .pipeline import classify_files

        rows = []
        for paths in batch["paths"]:
            sources = [os.fsdecode(bytes(p)) for p in paths]
            results = classify_files(self.classifier, sources, batch_size=max(1, len(sources)),
                                     workers=0, max_pixels=self.max_pixels)
            rows.append(json.dumps([r.to_dict() for r in results]))
        return {"start": batch["start"], "rows": rows}


def classify_on_ray(classifier: Any, sources: Sequence, batch_size: int = 16,
                    max_pixels: Optional[int] = None, actors: Optional[int] = None,
                    threads: int = 1) -> Iterator[dict]:
    """The result row of every source (:meth:`FileResult.to_dict
    <leukedge.runtime.pipeline.FileResult.to_dict>`), in input order, classified by Ray actors.

    Args:
        classifier: the model as opened here: its file, provider and review threshold are what
            every actor opens.
        sources: image paths that every Ray node can read.
        batch_size: inputs per batch (per model run at most), as in a local run.
        max_pixels: refuse images whose header declares more pixels than this.
        actors: actors side by side; None = the cluster's CPUs divided by ``threads``.
        threads: ONNX Runtime threads (and Ray CPUs) per actor.

    Raises:
        RaySetupError: Ray is not connected (:func:`connect`) or the job failed.
    """
    from .decode import MAX_PIXELS

    ray = load_ray()
    if not ray.is_initialized():
        raise RaySetupError("Ray is not connected: call connect() first")
    if not sources:
        return
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = actors or max(1, cpus // threads)
    starts = range(0, len(sources), batch_size)
    items = [{"start": s, "paths": [os.fsencode(str(p)) for p in sources[s:s + batch_size]]}
             for s in starts]
    per_call = max(1, min(BATCHES_PER_CALL, len(items) // max(1, 2 * actors)))
    dataset = ray.data.from_items(items, override_num_blocks=min(
        -(-len(items) // per_call), MAX_BLOCKS))
    model = classifier.model_path
    dataset = dataset.map_batches(
        ClassifyBatches, batch_size=per_call, batch_format="numpy", num_cpus=threads,
        compute=ray.data.ActorPoolStrategy(size=actors),
        # the model's bytes once in the object store, by a reference in a list: an actor
        # restarted on another node fetches them again
        fn_constructor_kwargs={"model": [ray.put(model.read_bytes())], "model_name": model.name,
                               "provider": classifier.session_info.requested,
                               "threads": threads, "review_below": classifier.review_below,
                               "max_pixels": max_pixels or MAX_PIXELS})
    yield from _in_order(dataset, list(starts))


def _in_order(dataset: Any, starts: list[int]) -> Iterator[dict]:
    """The rows of the batches that begin at ``starts``, in that order whatever order they
    arrive in."""
    waiting: dict[int, list] = {}
    emitted = 0
    try:
        for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for start, rows in zip(out["start"], out["rows"]):
                waiting[int(start)] = json.loads(rows)
            while emitted < len(starts) and starts[emitted] in waiting:
                yield from waiting.pop(starts[emitted])
                emitted += 1
    except Exception as e:  # a worker died, the model failed to open on a node...
        raise RaySetupError(f"the Ray job failed: {_first_line(e)}") from e
    if emitted != len(starts):
        raise RaySetupError(f"the Ray job returned {emitted} of {len(starts)} batches")
