"""Where results go (issue 19): `-o` never destroys an input or the model, a full disk or an
encoding that cannot hold a name ends in a clear message with nothing partial left, and the
files a folder holds that are not images are named, not silently skipped."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukedge.cli.destination import Destination, OutputError, refuse_inputs
from leukedge.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def two_images(tmp_path, sample_images) -> list[Path]:
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path, source in zip(paths, sample_images):
        path.write_bytes(source.read_bytes())
    return paths


# --------------------------------------------------------------------------- -o = an input


def test_output_naming_an_input_is_refused_before_any_work(tiny_model_path, two_images):
    before = two_images[0].read_bytes()
    result = invoke("infer", *two_images, "-m", tiny_model_path, "-f", "csv", "-o", two_images[0])
    assert result.exit_code == 2 and "--output" in result.stderr
    assert str(two_images[0]) in result.stderr and "same file as the input" in result.stderr
    assert two_images[0].read_bytes() == before and "classified" not in result.stderr


def test_output_naming_an_input_another_way_is_refused(tiny_model_path, two_images, tmp_path):
    link = tmp_path / "hard.jpg"
    os.link(two_images[1], link)
    (tmp_path / "sub").mkdir()
    for spelling in (link, tmp_path / "sub" / ".." / "b.jpg"):
        result = invoke("infer", tmp_path, "-m", tiny_model_path, "-o", spelling)
        assert result.exit_code == 2 and "same file as the input" in result.stderr
    assert two_images[1].read_bytes()[:3] == b"\xff\xd8\xff"


def test_output_naming_the_model_is_refused(make_tiny_onnx, two_images, tmp_path):
    model = make_tiny_onnx(tmp_path / "m.onnx")
    before = model.read_bytes()
    result = invoke("infer", *two_images, "-m", model, "-o", model)
    assert result.exit_code == 2 and f"--output {model} is the same file as the model" \
        in result.stderr
    result = invoke("bench", model, "-o", model, "--iterations", 1, "--warmup", 0)
    assert result.exit_code == 2 and "--out" in result.stderr and "the model" in result.stderr
    assert model.read_bytes() == before


def test_refuse_inputs_compares_by_identity_and_by_real_path(tmp_path):
    existing = tmp_path / "x.jpg"
    existing.write_bytes(b"x")
    (tmp_path / "ln.jpg").symlink_to(existing)
    refuse_inputs(tmp_path / "other.csv", "--output", [existing])  # a new, different file
    refuse_inputs(None, "--output", [existing])
    refuse_inputs("/dev/null", "--output", ["/dev/null"])  # a device is streamed to
    for same in (existing, tmp_path / "ln.jpg", tmp_path / "." / "x.jpg"):
        with pytest.raises(ValueError, match=r"--output .* same file as the input"):
            refuse_inputs(same, "--output", [existing])
    with pytest.raises(ValueError, match="same file"):  # neither exists yet: same real path
        refuse_inputs(tmp_path / "new.csv", "--output", [tmp_path / "sub" / ".." / "new.csv"])


# --------------------------------------------------------------------------- full disk


class FullDisk:
    """A text stream that takes the header and then fails like a full disk."""

    encoding = "utf-8"

    def __init__(self, fail_after: int = 1):
        self.left = fail_after

    def write(self, text):
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= 1
        return len(text)

    def flush(self):
        pass

    def close(self):
        pass


def test_a_full_disk_while_writing_is_exit_1_and_leaves_nothing(tiny_model_path, two_images,
                                                                 tmp_path, monkeypatch):
    out = tmp_path / "results" / "rows.csv"
    out.parent.mkdir()
    real_fdopen = os.fdopen
    monkeypatch.setattr("leukedge.cli.destination.os.fdopen",
                        lambda fd, *a, **k: (real_fdopen(fd).close(), FullDisk())[1])
    result = invoke("infer", *two_images, "-m", tiny_model_path, "-f", "csv", "-o", out)
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.stderr and f"--output {out}" in result.stderr
    assert "Traceback" not in result.output and list(out.parent.iterdir()) == []


def test_a_full_disk_at_commit_keeps_the_previous_file(tiny_model_path, two_images, tmp_path,
                                                       monkeypatch):
    out = tmp_path / "rows.json"
    out.write_text("yesterday's results\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("leukedge.cli.destination.os.fsync", no_space)
    result = invoke("infer", *two_images, "-m", tiny_model_path, "-f", "json", "-o", out)
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert "existing file is unchanged" in result.stderr
    assert out.read_text() == "yesterday's results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.jpg", "rows.json"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_streaming_to_a_full_device_is_a_message(tiny_model_path, two_images):
    result = invoke("infer", *two_images, "-m", tiny_model_path, "-o", "/dev/full")
    assert result.exit_code == 1 and "--output /dev/full: cannot write the results" \
        in result.stderr and "No space left on device" in result.stderr


def test_destination_discard_survives_a_stream_that_cannot_flush(tmp_path):
    destination = Destination.open(tmp_path / "r.csv")
    destination.write("header")
    destination._stream.close = lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    destination.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="standard output: cannot write the results"):
        Destination(FullDisk(0), flag="standard output").write("row")


# --------------------------------------------------------------------------- encodings


def test_stdout_in_cp1252_escapes_what_it_cannot_hold(tiny_model_path, sample_images, tmp_path):
    names = ["smear-é.jpg", "Ausstrich-ß-ω-血.jpg", "plain.jpg"]
    for name, source in zip(names, sample_images):
        (tmp_path / name).write_bytes(source.read_bytes())
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    done = subprocess.run([sys.executable, "-m", "leukedge.cli", "infer", *sorted(
        str(tmp_path / n) for n in names), "-m", str(tiny_model_path), "-f", "csv"],
        capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode("cp1252", "replace")
    assert b"Traceback" not in done.stderr
    rows = done.stdout.decode("cp1252").splitlines()
    assert len(rows) == 4  # header + every image: none lost
    text = "\n".join(rows)
    assert "Ausstrich-ß-\\u03c9-\\u8840.jpg" in text and "smear-é.jpg" in text


# --------------------------------------------------------------------------- skipped files


def test_files_that_are_not_images_are_named_not_skipped_silently(tiny_model_path, two_images,
                                                                  tmp_path):
    for name in ("c.avif", "d.gif", "e.heic", "f.jp2", "g.dat", "h.jxl", ".hidden.gif",
                 "README.md", "notes.txt"):
        (tmp_path / name).write_bytes(b"GIF89a....")
    result = invoke("infer", tmp_path, "-m", tiny_model_path, "-f", "json")
    assert result.exit_code == 0, result.output
    assert "skipped 6 files that are not JPEG/PNG/TIFF/BMP/WebP: c.avif, d.gif, e.heic, f.jp2, " \
           "g.dat and 1 more" in result.stderr
    assert ".hidden" not in result.stderr and "2/2 images classified" in result.stderr
    assert "README" not in result.stderr and "notes" not in result.stderr  # text beside images


def test_exit_codes_follow_the_error_type():
    """A check that refused a result exits 1; everything a user fixes before rerunning, 2."""
    from leukedge.cli.errors import EXIT_FAILED, EXIT_USAGE, exit_code
    from leukedge.export.errors import AccuracyGateError, ParityError, QuantizationError
    from leukedge.runtime.contract import ContractError
    from leukedge.runtime.models import ModelNotFoundError

    for refused in (ParityError("x"), AccuracyGateError("x"), QuantizationError("x")):
        assert exit_code(refused) == EXIT_FAILED
    for usage in (ContractError("x"), ModelNotFoundError("x"), ValueError("x")):
        assert exit_code(usage) == EXIT_USAGE
