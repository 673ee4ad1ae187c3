"""What an adversarial pass over `leukedge infer`, `info` and `compare` found, one test per case
(docs/robustness.md lists them with their results)."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [a if isinstance(a, str) else os.fsdecode(a) for a in args],
                         input=input)


def rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture()
def good(tmp_path, sample_images) -> Path:
    target = tmp_path / "good.jpg"
    target.write_bytes(sample_images[0].read_bytes())
    return target


# --------------------------------------------------------------------------- not a smear


def _png(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.parametrize("name, pixels, reason", [
    ("black", np.zeros((64, 64, 3), np.uint8), "blank or flat image"),
    ("white", np.full((64, 64, 3), 255, np.uint8), "blank or flat image"),
    ("green", np.dstack([np.zeros((64, 64)), np.indices((64, 64)).sum(0) % 2 * 255,
                         np.zeros((64, 64))]).astype(np.uint8), "unlike the training images"),
])
def test_a_frame_that_is_not_a_smear_needs_review(tiny_model_path, tmp_path, name, pixels, reason):
    path = _png(tmp_path / f"{name}.png", pixels)
    (row,) = rows(invoke("infer", path, "-m", tiny_model_path, "-f", "json").stdout)
    assert row["needs_review"] is True
    assert any(r["message"].startswith(reason) for r in row["review_reasons"]), row


# --------------------------------------------------------------------------- memory bombs


def _bomb(path: Path, width: int, height: int) -> Path:
    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", body)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_by_its_header(tiny_model_path, tmp_path, good):
    bomb = _bomb(tmp_path / "bomb.png", 30000, 30000)
    result = invoke("infer", good, bomb, "/dev/zero", "-m", tiny_model_path, "-f", "json")
    assert result.exit_code == 1
    ok, big, zero = rows(result.stdout)
    assert ok["error"] is None
    assert "image too large" in big["error"] and "--max-pixels" in big["error"]
    assert "not a regular file" in zero["error"]


def test_max_pixels_is_an_option(tiny_model_path, good):
    result = invoke("infer", good, "-m", tiny_model_path, "-f", "json", "--max-pixels", "1000")
    assert result.exit_code == 1 and "image too large" in rows(result.stdout)[0]["error"]


# --------------------------------------------------------------------------- hangs


def test_a_fifo_on_the_command_line_does_not_block(tiny_model_path, tmp_path, good):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    box = {}
    worker = threading.Thread(target=lambda: box.update(
        result=invoke("infer", good, fifo, good, "-m", tiny_model_path, "-f", "json")))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "infer blocked on a FIFO"
    out = rows(box["result"].stdout)
    assert [r["error"] is None for r in out] == [True, False]  # the same good file once
    assert "not a regular file" in out[1]["error"]


def test_symlink_loops_give_one_row_per_image(tiny_model_path, tmp_path, good):
    scan = tmp_path / "scan"
    (scan / "a").mkdir(parents=True)
    (scan / "a" / "cell.jpg").write_bytes(good.read_bytes())
    (scan / "a" / "loop").symlink_to(scan)
    (scan / "a" / "loop2").symlink_to(scan / "a")
    for args in ([scan, "-r"], [str(scan / "**" / "*.jpg"), "-r"]):
        out = rows(invoke("infer", *args, "-m", tiny_model_path, "-f", "json").stdout)
        assert len(out) == 1, out


# --------------------------------------------------------------------------- omissions, tracebacks


def test_an_unreadable_subfolder_is_reported_and_exits_1(tiny_model_path, tmp_path, good,
                                                         monkeypatch):
    scan = tmp_path / "scan"
    (scan / "locked").mkdir(parents=True)
    (scan / "cell.jpg").write_bytes(good.read_bytes())
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied")) if Path(p).name == "locked" else real(p))
    result = invoke("infer", scan, "-r", "-m", tiny_model_path, "-f", "json")
    assert result.exit_code == 1 and len(rows(result.stdout)) == 1
    assert "locked: cannot read folder (Permission denied)" in result.stderr
    alone = invoke("infer", scan / "locked", "-m", tiny_model_path)
    assert alone.exit_code == 1 and "Traceback" not in alone.output


def test_a_name_too_long_is_an_error_row(tiny_model_path, tmp_path, good):
    result = invoke("infer", good, tmp_path / ("n" * 300 + ".jpg"), "-m", tiny_model_path,
                    "-f", "json")
    assert result.exit_code == 1 and "file name too long" in rows(result.stdout)[1]["error"]


def test_a_non_utf8_name_with_output_loses_nothing(tiny_model_path, tmp_path, good):
    raw = os.path.join(os.fsencode(tmp_path), b"cell-\xff.jpg")
    with open(raw, "wb") as f:
        f.write(good.read_bytes())
    out = tmp_path / "results.jsonl"
    result = invoke("infer", raw, good, "-m", tiny_model_path, "-f", "json", "-o", out)
    assert result.exit_code == 0, result.output
    first, _ = rows(out.read_text(encoding="utf-8"))
    assert first["path"].endswith("cell-\\xff.jpg") and first["error"] is None


def test_an_overlay_that_cannot_be_written_does_not_stop_the_run(tiny_model_path, tmp_path, good,
                                                                 monkeypatch):
    from leukedge.runtime import overlay

    monkeypatch.setattr(overlay, "write_overlay",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("encoder exploded")))
    result = invoke("infer", good, good.with_name("good.jpg"), "-m", tiny_model_path,
                    "--overlay-dir", tmp_path / "ov", "-f", "json")
    assert result.exit_code == 1 and len(rows(result.stdout)) == 1
    assert "overlay of" in result.stderr and "encoder exploded" in result.stderr


def test_compare_on_a_folder_with_junk_names_the_file(tiny_model_path, tmp_path, good):
    for c in ("Benign", "Early", "Pre", "Pro"):
        (tmp_path / "data" / c).mkdir(parents=True)
        (tmp_path / "data" / c / "a.jpg").write_bytes(good.read_bytes())
    (tmp_path / "data" / "Pro" / "junk.jpg").write_bytes(b"\xff\xd8\xff junk")
    result = invoke("compare", tiny_model_path, "--data", tmp_path / "data")
    assert result.exit_code == 2 and "junk.jpg" in result.stderr
    assert "Traceback" not in result.output
    limit = invoke("compare", tiny_model_path, "--data", tmp_path / "data", "--limit", "0")
    assert limit.exit_code == 2 and "--limit" in limit.output


# --------------------------------------------------------------------------- output integrity


def test_csv_quotes_a_newline_in_a_file_name(tiny_model_path, tmp_path, good):
    odd = tmp_path / "two\nlines.jpg"
    odd.write_bytes(good.read_bytes())
    result = invoke("infer", odd, good, "-m", tiny_model_path, "-f", "csv")
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in parsed] == [str(odd), str(good)]


def test_a_crafted_name_cannot_fake_a_table_row(tiny_model_path, tmp_path, good):
    odd = tmp_path / "x.jpg\nfake.jpg  Benign   1.000\x1b[2J"
    odd.write_bytes(good.read_bytes())
    result = invoke("infer", odd, "-m", tiny_model_path)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "\\n" in lines[1] and "\x1b" not in result.stdout


def test_output_to_a_device_streams_and_never_replaces_it(tiny_model_path, good):
    result = invoke("infer", good, "-m", tiny_model_path, "-o", "/dev/null")
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_output_to_a_fifo_streams(tiny_model_path, tmp_path, good):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(text=fifo.read_text()))
    reader.start()
    result = invoke("infer", good, "-m", tiny_model_path, "-f", "json", "-o", fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0 and len(rows(got["text"])) == 1


def test_an_unwritable_output_is_refused_before_classifying(tiny_model_path, tmp_path, good,
                                                            monkeypatch):
    import leukedge.cli.infer as infer_cli

    monkeypatch.setattr(infer_cli, "open_classifier",
                        lambda *a: pytest.fail("classified before checking --output"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("infer", good, "-m", tiny_model_path, "-o", blocker / "results.json")
    assert result.exit_code == 2 and "--output" in result.stderr


def test_output_keeps_the_mode_of_an_existing_file(tiny_model_path, tmp_path, good):
    out = tmp_path / "results.csv"
    out.write_text("old")
    out.chmod(0o600)
    assert invoke("infer", good, "-m", tiny_model_path, "-f", "csv", "-o", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and "prob_Benign" in out.read_text()


# --------------------------------------------------------------------------- more inputs


def test_paths_from_stdin(tiny_model_path, good, tmp_path):
    result = invoke("infer", "-", "-m", tiny_model_path, "-f", "json",
                    input=f"{good}\n{tmp_path / 'absent.jpg'}\n")
    out = rows(result.stdout)
    assert result.exit_code == 1 and len(out) == 2 and "file not found" in out[1]["error"]


def test_exif_orientation_is_applied_before_classifying(tiny_model_path, tmp_path, sample_images):
    from test_decode import _with_orientation

    upright = cv2.imread(str(sample_images[0]))
    stored = np.rot90(upright, 1)  # what a camera that wrote "rotate 90 CW" stored
    data = cv2.imencode(".jpg", np.ascontiguousarray(stored), [cv2.IMWRITE_JPEG_QUALITY, 100])[1]
    tagged = tmp_path / "tagged.jpg"
    tagged.write_bytes(_with_orientation(data.tobytes(), 6))
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(cv2.imencode(".jpg", upright, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes())
    a, b = rows(invoke("infer", tagged, plain, "-m", tiny_model_path, "-f", "json").stdout)
    assert a["probabilities"] == pytest.approx(b["probabilities"], abs=0.02)
