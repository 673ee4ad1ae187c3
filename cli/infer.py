"""`leukedge infer`: classify smear images with a leukedge ONNX model (ONNX Runtime, no TensorFlow).

Only Typer and the standard library are imported at module level; numpy, OpenCV and onnxruntime
are imported inside the command, so `leukedge --help` stays fast and TensorFlow is never touched.
"""

from __future__ import annotations

import enum
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer

from .errors import fail

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN_IMAGES = 8  # a progress bar for a handful of images is noise

HELP = ("Classify blood-smear images; one result per input, in input order.\n\n"
        "A bad input (missing, empty, truncated, not an image, grayscale, 16-bit) never stops the "
        "run: its row carries an error naming the file and the reason.")
EPILOG = ("Exit codes: 0 = every input was classified; 1 = some inputs failed (their rows carry "
          "an error naming the file and the reason); 2 = usage error or unusable model (missing, "
          "corrupt, no leukedge contract, provider not available).")


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Provider(str, enum.Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


@dataclass
class _Tally:
    total: int = 0
    failed: int = 0
    review: int = 0
    overlay_failed: int = 0


def register(app: typer.Typer) -> None:
    """Adds `leukedge infer` to the app."""
    app.command("infer", help=HELP, epilog=EPILOG)(infer)



def _collect_inputs(paths: List[str], recursive: bool) -> list:
    """Expand PATHs (files, folders, globs); a pattern or folder that yields nothing is reported."""
    from leukedge.runtime.preprocess import list_images

    sources = []
    for raw in paths:
        found = list_images([raw], recursive=recursive)
        if not found:
            typer.echo(f"Warning: no images in {raw!r} (folders list .jpg/.jpeg/.png/.tif/.tiff/.bmp"
                       f"{'' if recursive else '; add --recursive for subfolders'})", err=True)
        sources.extend(found)
    if not sources:
        fail(f"no images found in {', '.join(paths)}", EXIT_USAGE)
    return sources


def _check_destinations(output: Optional[Path], overlay_dir: Optional[Path]) -> None:
    if output is not None and output.is_dir():
        fail(f"--output {output} is a folder; give a file name", EXIT_USAGE)
    if overlay_dir is not None:
        try:
            overlay_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"--overlay-dir {overlay_dir}: cannot create the folder ({e.strerror or e})",
                 EXIT_USAGE)


def _open_classifier(model: Optional[Path], provider: str, threads: Optional[int],
                     review_below: Optional[float]) -> Any:
    """The Classifier, or exit 2 with the reason (never a traceback) when the model is unusable."""
    from leukedge.runtime.classifier import Classifier
    from leukedge.runtime.contract import ContractError
    from leukedge.runtime.session import RuntimeSetupError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            classifier = Classifier(model, provider=provider, threads=threads,
                                    review_below=review_below)
        except (FileNotFoundError, RuntimeSetupError, ContractError, ValueError) as e:
            fail(str(e), EXIT_USAGE)
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)):
            typer.echo(f"Warning: {w.message}", err=True)
    return classifier


def _write_overlay(classifier: Any, path: Path, result: Any, tally: _Tally) -> None:
    from leukedge.runtime.overlay import write_overlay

    try:
        write_overlay(path, result.image, classifier.spec.hsv_mask, result.prediction)
    except OSError as e:
        tally.overlay_failed += 1
        typer.echo(f"Warning: overlay of {result.source} not written ({e})", err=True)


def _classify(classifier: Any, sources: list, fmt: str, batch_size: int,
              overlay_dir: Optional[Path], emit: Callable[[str], Any]) -> _Tally:
    """Run the pipeline, emit one line per input in order, write overlays; return the counts."""
    from leukedge.runtime.overlay import overlay_names
    from leukedge.runtime.pipeline import classify_files

    from .output import RowFormatter

    formatter = RowFormatter(fmt, classifier.classes, [str(s) for s in sources])
    header = formatter.header()
    if header is not None:
        emit(header)
    names = overlay_names(sources) if overlay_dir is not None else []
    tally = _Tally(total=len(sources))
    show = sys.stderr.isatty() and len(sources) > PROGRESS_MIN_IMAGES
    results = classify_files(classifier, sources, batch_size=batch_size,
                             keep_images=overlay_dir is not None)
    with typer.progressbar(length=len(sources), label="Classifying", file=sys.stderr,
                           hidden=not show) as bar:
        for i, result in enumerate(results):
            tally.failed += not result.ok
            tally.review += bool(result.ok and result.prediction.needs_review)
            if overlay_dir is not None and result.ok:
                _write_overlay(classifier, overlay_dir / names[i], result, tally)
            emit(formatter.line(result.to_dict()))
            bar.update(1)
    return tally


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS after every image.

    Each image makes a few 200-600 KB temporaries; glibc's default thresholds hand them back to
    the OS and fault them in again. The same thresholds set through the environment
    (MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_THRESHOLD_) took 650 images from 3.86-4.54 s to
    3.26-3.63 s here; set this late, at command start, the gain was smaller and within this
    machine's noise. A process-wide setting, so the command sets it, not the library. Elsewhere
    than glibc this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_trim_threshold, 64 << 20)
        libc.mallopt(m_mmap_threshold, 64 << 20)
    except (OSError, AttributeError):  # musl or another libc without mallopt
        pass


def _summary(tally: _Tally, seconds: float, review_below: float) -> str:
    done = tally.total - tally.failed
    rate = tally.total / seconds if seconds > 0 else float("inf")
    text = (f"{done}/{tally.total} images classified in {seconds:.2f} s ({rate:.0f} images/s); "
            f"{tally.failed} failed; {tally.review} need review (confidence < {review_below:g})")
    if tally.overlay_failed:
        text += f"; {tally.overlay_failed} overlays not written"
    return text


def infer(
    paths: Annotated[List[str], typer.Argument(
        metavar="PATH...", show_default=False,
        help="Image files, folders or glob patterns (JPEG, PNG, TIFF, BMP).")],
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="ONNX model with a leukedge contract (default: the bundled int8 model).",
        show_default=False)] = None,
    provider: Annotated[Provider, typer.Option(
        help="auto: CUDA when onnxruntime-gpu has a working GPU, else CPU; cuda: fail without it.")
    ] = Provider.auto,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="ONNX Runtime threads per model run. Default: 1 when there is more than one "
                    "batch (batches then run side by side, one per CPU), else the CPUs this "
                    "process may use (at most 8).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model run.")] = 16,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="table, json (JSON Lines, one object per input) or csv.")
    ] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the results to this file (atomically) instead of stdout.",
        show_default=False)] = None,
    review_below: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, show_default=False,
        help="Flag predictions under this confidence for review (default: the model's contract).")
    ] = None,
    overlay_dir: Annotated[Optional[Path], typer.Option(
        help="Write a PNG per image with the HSV mask outline and the prediction.",
        show_default=False)] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Descend into subfolders (and ** in glob patterns).")] = False,
) -> None:
    """Classify blood-smear images; one result per input, in input order (see HELP)."""
    _keep_freed_memory()
    sources = _collect_inputs(paths, recursive)
    _check_destinations(output, overlay_dir)
    if threads is None and len(sources) > batch_size:
        threads = 1  # whole batches side by side beat intra-op threads (runtime.pipeline)
    classifier = _open_classifier(model, provider.value, threads, review_below)
    lines: list[str] = []
    emit = lines.append if output is not None else typer.echo
    started = time.perf_counter()
    tally = _classify(classifier, sources, fmt.value, batch_size, overlay_dir, emit)
    if output is not None:
        from leukedge.runtime.files import atomic_write_text

        try:
            atomic_write_text(output, "".join(line + "\n" for line in lines))
        except OSError as e:
            fail(f"--output {output}: cannot write ({e.strerror or e})", EXIT_USAGE)
    typer.echo(_summary(tally, time.perf_counter() - started, classifier.review_below), err=True)
    failed = tally.failed or tally.overlay_failed
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)
