"""Model runs and decoded images bounded by pixels, not by an image count.

Memory follows pixels: a decoded frame holds 3 bytes per pixel, and the model casts its input to
float32 before resizing it inside the graph, 12 bytes more per pixel of every image of a run
(measured: one 49 MP image raises a session's RSS by 616 MB, which ONNX Runtime's arena then
keeps; four 12 MP images in one run, 589 MB). Sixteen 49 MP images in one run would need 11 GB;
sixteen 224 x 224 ones, 10 MB. So every path that batches (``classify_files``, ``compare``, the
serve ``Batcher``) plans its runs with :func:`plan_runs`, and the decoded pixels that several
threads hold at once are bounded by a shared :class:`PixelBudget`. :data:`PIXEL_BUDGET` is 32 MP:
with 50 MP, ``leukedge infer`` on 48 JPEGs of 12 MP peaked at 1578 MB (bench/bench_memory.py,
docs/RESULTS.md "Memory"); an image over the budget (up to 50 MP, ``--max-pixels``) runs alone.

Example:
    >>> plan_runs([(3000, 4000, 3)] * 5 + [(224, 224, 3)] * 3, max_images=16)
    [[0, 1], [2, 3], [4], [5, 6, 7]]
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from typing import Iterator, Optional, Sequence

import numpy as np

from .decode import image_format
from .image_header import read_dimensions

PIXEL_BUDGET = 32_000_000  # pixels decoded or in a model run at once (see above)
MAX_RUN_IMAGES = 1024  # images per model run, whatever their size
# Images per model run for a single-threaded CPU session (leukedge infer's workers): one thread
# ran the default INT8 model at 157 images/s in runs of 4 against 138 in runs of 16 (224 px;
# bench/profile_infer.py, docs/RESULTS.md "Where the time goes"): the preprocessing's float
# tensors of 16 images (9.6 MB each) do not stay in the core's cache, those of 4 do. With two
# intra-op threads larger runs were faster (182 at 4, 200 at 16), and GPUs want them too.
CPU_RUN_IMAGES = 4


def pixels_of(shape: Sequence[int]) -> int:
    """Height x width of an image shape (H, W[, C])."""
    return int(shape[0]) * int(shape[1])


def declared_pixels(data: bytes, max_pixels: int) -> int:
    """The pixels an encoded image's header declares (``max_pixels`` when it cannot be read):
    what decoding it will hold, known before decoding."""
    dims = read_dimensions(data, image_format(data))
    return min(dims[0] * dims[1], max_pixels) if dims else max_pixels


def images_per_run(shape: Sequence[int], max_images: int, pixel_budget: int = PIXEL_BUDGET) -> int:
    """How many images of ``shape`` one run may hold: at most ``max_images``, at most the
    budget, at least one."""
    return max(1, min(int(max_images), int(pixel_budget) // max(1, pixels_of(shape))))


def plan_runs(shapes: Sequence[Sequence[int]], max_images: int,
              pixel_budget: int = PIXEL_BUDGET) -> list[list[int]]:
    """Indices of ``shapes`` grouped by shape (first-seen order), each group split into runs of
    at most ``max_images`` images and ``pixel_budget`` pixels (an image over it runs alone)."""
    if int(max_images) < 1 or int(pixel_budget) < 1:
        raise ValueError(f"max_images and pixel_budget must be >= 1, got {max_images}, "
                         f"{pixel_budget}")
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    runs = []
    for shape, indices in groups.items():
        step = images_per_run(shape, max_images, pixel_budget)
        runs += [indices[k:k + step] for k in range(0, len(indices), step)]
    return runs


def model_runs(images: Sequence[np.ndarray], max_images: int = MAX_RUN_IMAGES,
               pixel_budget: int = PIXEL_BUDGET) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, uint8 [n, H, W, 3] batch) per model run of :func:`plan_runs`; a one-image
    run is a view, not a copy (a large frame is hundreds of MB)."""
    for run in plan_runs([np.shape(im) for im in images], max_images, pixel_budget):
        yield run, (np.asarray(images[run[0]])[None] if len(run) == 1
                    else np.stack([images[i] for i in run]))


class PixelBudget:
    """Decoded pixels that threads may hold at once: acquire before decoding, release after the
    model run. A request over the whole budget is granted alone (it takes all of it).

    Example:
        >>> budget = PixelBudget(32_000_000)
        >>> held = budget.acquire(12_000_000)   # blocks while others hold too much
        >>> budget.release(held)
    """

    def __init__(self, total: int = PIXEL_BUDGET):
        if int(total) < 1:
            raise ValueError(f"pixel budget must be >= 1, got {total}")
        self.total, self.used, self.peak = int(total), 0, 0
        self._changed = threading.Condition()

    def _grant(self, pixels: int) -> int:
        self.used += pixels
        self.peak = max(self.peak, self.used)
        return pixels

    def acquire(self, pixels: int) -> int:
        """Wait until ``pixels`` (capped at the total) fit; returns what is now held."""
        wanted = min(int(pixels), self.total)
        with self._changed:
            self._changed.wait_for(lambda: self.used + wanted <= self.total)
            return self._grant(wanted)

    def try_acquire(self, pixels: int) -> Optional[int]:
        """Like :meth:`acquire` without waiting: None when it does not fit now."""
        wanted = min(int(pixels), self.total)
        with self._changed:
            return self._grant(wanted) if self.used + wanted <= self.total else None

    def release(self, pixels: int) -> None:
        with self._changed:
            self.used = max(0, self.used - int(pixels))
            self._changed.notify_all()


def release_freed_memory() -> bool:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim(0)``): after a burst of large
    frames, glibc otherwise keeps them. A no-op returning False elsewhere (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
