"""`leukedge infer`: classify smear images with a leukedge model (ONNX Runtime, no TensorFlow).

Only Typer and the standard library are imported at module level; numpy, OpenCV and onnxruntime
are imported inside the command, so `leukedge --help` stays fast and TensorFlow is never touched.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from .classifier import open_classifier
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, reported
from .options import OutputFormat, Provider, ProviderOption

PROGRESS_MIN_IMAGES = 8  # a progress bar for a handful of images is noise
SKIPPED_NAMED = 5  # files skipped for their suffix named in the warning; the rest counted

HELP = """Classify blood-smear images; one result per input, in input order.

A bad input (missing, empty, truncated, not an image, grayscale, 16-bit, too large) never
stops the run: its row carries an error naming the file and the reason. Predictions under the
review threshold, and images that fail the model's input checks (blank, no stained cells,
unlike the training images), are flagged for review with the reason."""
EPILOG = ("Exit codes: 0 = every input was classified; 1 = some inputs failed, folders "
          "could not be read (named on stderr) or the results could not be written (a full "
          "disk: nothing partial is left); 2 = usage error or unusable model (also --output "
          "naming an input or the model).")


@dataclass
class InferOptions:
    """The command's options, checked once at the boundary."""

    paths: list[str]
    model: Optional[str]
    provider: str
    threads: Optional[int]
    batch_size: int
    fmt: str
    output: Optional[Path]
    review_below: Optional[float]
    overlay_dir: Optional[Path]
    recursive: bool
    max_pixels: int
    ray: Optional[str] = None


@dataclass
class _Tally:
    total: int = 0
    failed: int = 0
    review: int = 0
    overlay_failed: int = 0
    listing_problems: int = 0
    notes: list = field(default_factory=list)


def register(app: typer.Typer) -> None:
    """Adds `leukedge infer` to the app."""
    app.command("infer", help=HELP, epilog=EPILOG,
                short_help="Classify smear images (one row per input).")(infer)


def _read_stdin_paths() -> list[str]:
    return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]


def collect_inputs(paths: List[str], recursive: bool) -> tuple[list, list]:
    """(image paths, listing problems); `-` reads paths from stdin, one per line."""
    from leukedge.runtime.files import find_images

    expanded: list[str] = []
    for raw in paths:
        expanded.extend(_read_stdin_paths() if raw == "-" else [raw])
    sources, problems, skipped = [], [], []
    for raw in expanded:
        listing = find_images([raw], recursive=recursive)
        problems.extend(listing.problems)
        skipped.extend(listing.skipped)
        if not listing.paths and not listing.problems:
            hint = "" if recursive else "; add --recursive for subfolders"
            typer.echo(f"Warning: no images in {raw!r} (folders list .jpg/.jpeg/.png/.tif/"
                       f".tiff/.bmp/.webp{hint})", err=True)
        sources.extend(listing.paths)
    if skipped:
        typer.echo(skipped_note(skipped), err=True)
    return _unique(sources), problems


def skipped_note(skipped: list, named: int = SKIPPED_NAMED) -> str:
    """The warning for the files of searched folders that were left out for their suffix."""
    from leukedge.runtime.files import IMAGE_KINDS

    from .output import display_path, escape_controls

    names = ", ".join(escape_controls(display_path(Path(p).name)) for p in skipped[:named])
    more = f" and {len(skipped) - named} more" if len(skipped) > named else ""
    return (f"Warning: skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} that "
            f"{'are' if len(skipped) != 1 else 'is'} not {IMAGE_KINDS}: {names}{more} "
            "(name such a file directly to see why it is refused)")


def _unique(paths: list) -> list:
    import os

    seen, out = set(), []
    for p in paths:
        try:
            key = os.path.realpath(p)
        except (OSError, ValueError):
            key = str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _write_overlay(path: Path, result: Any, tally: _Tally) -> Optional[str]:
    from leukedge.runtime.overlay import write_overlay

    try:
        write_overlay(path, result.image, result.mask, result.prediction)
        return str(path)
    except Exception as e:  # a full disk, a permission, an odd image: note it and go on
        tally.overlay_failed += 1
        typer.echo(f"Warning: overlay of {result.source} not written ({e})", err=True)
        return None


def classify_and_emit(classifier: Any, sources: list, opts: InferOptions, emit,
                      shorten: bool) -> _Tally:
    """Run the pipeline, emit one line per input in order, write overlays; return the counts."""
    from leukedge.runtime.overlay import overlay_names

    from .output import RowFormatter, utc_now

    formatter = RowFormatter(opts.fmt, classifier.classes, [str(s) for s in sources], shorten)
    header = formatter.header()
    if header is not None:
        emit(header)
    names = overlay_names(sources) if opts.overlay_dir is not None else []
    tally, common = _Tally(total=len(sources)), classifier.provenance
    show = sys.stderr.isatty() and len(sources) > PROGRESS_MIN_IMAGES
    with typer.progressbar(length=len(sources), label="Classifying", file=sys.stderr,
                           hidden=not show) as bar:
        for i, (row, result) in enumerate(_rows(classifier, sources, opts)):
            ok = row["error"] is None
            tally.failed += not ok
            tally.review += bool(ok and row["needs_review"])
            overlay = None
            if opts.overlay_dir is not None and ok:
                overlay = _write_overlay(opts.overlay_dir / names[i], result, tally)
            emit(formatter.line({**row, "overlay": overlay, "timestamp": utc_now(), **common}))
            bar.update(1)
    return tally


def _rows(classifier: Any, sources: list, opts: InferOptions):
    """(row, FileResult) per input, in input order; under --ray the rows come from the Ray
    actors and there is no FileResult (no pixels for overlays)."""
    if opts.ray is not None:
        from leukedge.runtime.ray_batch import classify_on_ray

        for row in classify_on_ray(classifier, sources, batch_size=opts.batch_size,
                                   max_pixels=opts.max_pixels,
                                   threads=classifier.session_info.intra_op_threads):
            yield row, None
        return
    from leukedge.runtime.pipeline import classify_files

    for result in classify_files(classifier, sources, batch_size=opts.batch_size,
                                 keep_images=opts.overlay_dir is not None,
                                 max_pixels=opts.max_pixels):
        yield result.to_dict(), result


def _summary(tally: _Tally, seconds: float, review_below: float) -> str:
    done = tally.total - tally.failed
    rate = tally.total / seconds if seconds > 0 else float("inf")
    text = (f"{done}/{tally.total} images classified in {seconds:.2f} s ({rate:.0f} images/s); "
            f"{tally.failed} failed; {tally.review} need review (confidence < {review_below:g}, "
            "or an input check failed)")
    if tally.overlay_failed:
        text += f"; {tally.overlay_failed} overlays not written"
    if tally.listing_problems:
        text += f"; {tally.listing_problems} folders could not be read"
    return text


def _check_options(opts: InferOptions) -> None:
    from leukedge.runtime.session import check_threads

    with reported(ValueError):
        check_threads(opts.threads)
    if opts.ray is not None and opts.overlay_dir is not None:
        fail("--overlay-dir cannot be used with --ray (the Ray actors keep no pixels); run "
             "without --ray for overlays", EXIT_USAGE)
    if opts.overlay_dir is not None:
        try:
            opts.overlay_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"--overlay-dir {opts.overlay_dir}: cannot create the folder "
                 f"({e.strerror or e})", EXIT_USAGE)


def _connect_ray(address: Optional[str]) -> bool:
    """Connect to Ray for --ray (True when this run started or joined it), or exit 2."""
    if address is None:
        return False
    from leukedge.runtime.ray_batch import connect

    with reported():
        return connect(address)


def run(opts: InferOptions) -> int:
    """The whole command; returns its exit code."""
    from leukedge.runtime.errors import LeukedgeError

    from .destination import Destination, OutputError, model_file

    _check_options(opts)
    sources, problems = collect_inputs(opts.paths, opts.recursive)
    for where, reason in problems:
        typer.echo(f"Error: {where}: {reason}", err=True)
    if not sources:
        fail(f"no images found in {', '.join(opts.paths)}", EXIT_USAGE if not problems
             else EXIT_FAILED)
    started_ray = _connect_ray(opts.ray)
    with reported(ValueError):
        destination = Destination.open(opts.output, "--output",
                                       protect=[*sources, *model_file(opts.model)])
    threads = opts.threads
    if threads is None and len(sources) > opts.batch_size:
        threads = 1  # whole batches side by side beat intra-op threads (runtime.pipeline)
    try:
        classifier = open_classifier(opts.model, opts.provider, threads, opts.review_below)
        started = time.perf_counter()
        shorten = opts.output is None and sys.stdout.isatty()
        tally = classify_and_emit(classifier, sources, opts, destination.write, shorten)
        destination.commit()
    except OutputError as e:  # a full disk, a closed pipe: the run's results are lost
        destination.discard()
        fail(str(e), EXIT_FAILED)
    except LeukedgeError as e:  # the Ray job failed: nothing partial is left
        destination.discard()
        fail(str(e), EXIT_FAILED)
    except BaseException:
        destination.discard()
        raise
    finally:
        if started_ray:
            from leukedge.runtime.ray_batch import disconnect
            disconnect()
    tally.listing_problems = len(problems)
    sys.stdout.flush()  # the rows before the summary, also when both go to one pipe
    typer.echo(_summary(tally, time.perf_counter() - started, classifier.review_below), err=True)
    failed = tally.failed or tally.overlay_failed or tally.listing_problems
    return EXIT_FAILED if failed else EXIT_OK


def infer(
    paths: Annotated[List[str], typer.Argument(
        metavar="PATH...", show_default=False,
        help="Image files, folders or glob patterns (JPEG, PNG, TIFF, BMP, WebP); - reads "
             "paths "
             "from standard input, one per line.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", show_default=False,
        help="A bundled model's name (see `leukedge models`), an ONNX file with a leukedge "
             "contract, or a run folder of `leukedge train` or `adapt` (its INT8, AVX2 or "
             "FP32 file, whichever this CPU runs exactly). Default: the bundled 'default' "
             "model.")] = None,
    provider: ProviderOption = Provider.auto,
    threads: Annotated[Optional[int], typer.Option(
        show_default=False,
        help="ONNX Runtime threads per model run (1-256). Default: 1 when there is more than "
             "one batch (batches then run side by side, one per CPU), else the CPUs this "
             "process may use (at most 8).")] = None,
    batch_size: Annotated[int, typer.Option(
        min=1, max=4096, help="Images per batch, the unit a worker reads and classifies; on "
                              "the CPU the model takes at most 4 of them at a time "
                              "(faster there).")] = 16,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="table, json (JSON Lines, one object per input) or csv.")
    ] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", show_default=False,
        help="Write the results to this file (atomically, keeping an existing file's "
             "permissions) or stream them to a device or FIFO, instead of stdout.")] = None,
    review_below: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, show_default=False,
        help="Flag predictions under this confidence for review (default: the model's "
             "calibrated threshold).")] = None,
    overlay_dir: Annotated[Optional[Path], typer.Option(
        show_default=False,
        help="Write a PNG per image with the stain mask outline and the prediction.")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Descend into subfolders (and ** in glob patterns).")] = False,
    max_pixels: Annotated[int, typer.Option(
        min=1, help="Refuse images whose header declares more pixels than this.")
    ] = 50_000_000,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", metavar="ADDRESS", show_default=False,
        help="Classify with Ray Data actors (one ONNX Runtime session each; same rows, same "
             "order): 'local' starts Ray on this PC, else a cluster address (auto, "
             "ray://head:10001) whose nodes all see the paths. Needs leukedge[ray].")] = None,
) -> None:
    """Classify blood-smear images; one result per input, in input order (see HELP)."""
    opts = InferOptions(list(paths), model, provider.value, threads, batch_size, fmt.value,
                        output, review_below, overlay_dir, recursive, max_pixels, ray)
    raise typer.Exit(run(opts))
