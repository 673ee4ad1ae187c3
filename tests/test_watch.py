"""`leukedge watch`: every image exactly one row, across SIGKILL at any moment; files written in
two halves; names still being written; give-up; moves; SIGTERM. Real processes, real files."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from leukedge.runtime.journal import FileKey, ResultJournal

from watch_helpers import distinct_jpeg, start, wait_for
from watch_helpers import rows as _rows
from watch_helpers import stop as _stop_with_stderr


def _start(inbox: Path, out: Path, model: Path, *extra: str):
    return start(str(inbox), out, model, *extra)


def _stop(proc) -> int:
    return _stop_with_stderr(proc)[0]


_wait_for = wait_for


def test_every_image_gets_exactly_one_row_across_sigkills(tiny_model_path, sample_images,
                                                           tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    rng = random.Random(7)
    names = []
    proc = _start(inbox, out, tiny_model_path)
    for i in range(30):
        name = f"scan_{i:03d}.jpg"
        data = distinct_jpeg(sample_images[i % len(sample_images)].read_bytes(), i)
        (inbox / f".{name}").write_bytes(data)  # hidden while written, then renamed
        os.rename(inbox / f".{name}", inbox / name)
        names.append(name)
        time.sleep(rng.uniform(0.0, 0.08))
        if i % 6 == 5:  # kill at a random moment, restart at once
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc = _start(inbox, out, tiny_model_path)
    _wait_for(lambda: len(_rows(out)) >= len(names))
    time.sleep(0.5)  # anything extra would show up now
    assert _stop(proc) == 0
    rows = _rows(out)
    counts = {n: sum(Path(r["path"]).name == n for r in rows) for n in names}
    assert counts == {n: 1 for n in names}
    assert all(r["error"] is None for r in rows)


def _expected(model: Path, data: bytes) -> dict:
    from leukedge.runtime.classifier import Classifier

    return dict(Classifier(model).predict(data).probabilities)


def _assert_row_is_for(row: dict, data: bytes, model: Path) -> None:
    """The row's key, size and probabilities are those of exactly these bytes."""
    assert row["error"] is None and row["label"]
    assert row["size_bytes"] == len(data)
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    expected = _expected(model, data)
    assert row["probabilities"] == pytest.approx(expected, abs=1e-5)


def test_a_file_written_in_two_halves_gets_one_row_for_the_finished_bytes(
        tiny_model_path, sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    data = sample_images[0].read_bytes()
    proc = _start(inbox, out, tiny_model_path)
    with open(inbox / "slow.jpg", "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(1.0)  # longer than --settle: the half file looks complete, but is cut short
        f.write(data[len(data) // 2:])
    _wait_for(lambda: len(_rows(out)) == 1)
    time.sleep(0.5)
    assert _stop(proc) == 0
    (row,) = _rows(out)
    _assert_row_is_for(row, data, tiny_model_path)
    assert row["mtime_ns"] == os.stat(inbox / "slow.jpg").st_mtime_ns


def _encoded(sample: Path, ext: str) -> bytes:
    import cv2

    pixels = cv2.imread(str(sample))
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", [".bmp", ".tif"])
def test_a_preallocated_file_is_moved_only_after_a_row_for_its_final_bytes(
        ext, tiny_model_path, sample_images, tmp_path):
    inbox, out, done = tmp_path / "inbox", tmp_path / "rows.jsonl", tmp_path / "done"
    inbox.mkdir()
    data = _encoded(sample_images[4], ext)
    proc = _start(inbox, out, tiny_model_path, "--done", str(done))
    with open(inbox / f"scan{ext}", "wb") as f:
        f.truncate(len(data))  # preallocated: the final size at once, zeros
        f.write(data[: len(data) * 3 // 10])
        f.flush()
        time.sleep(1.2)  # longer than --settle: size stable, 70% still zeros
        f.write(data[len(data) * 3 // 10:])
    _wait_for(lambda: len(_rows(out)) >= 1 and (done / f"scan{ext}").exists(), timeout=30)
    time.sleep(0.5)
    assert _stop(proc) == 0
    (row,) = _rows(out)
    _assert_row_is_for(row, data, tiny_model_path)
    assert (done / f"scan{ext}").read_bytes() == data and list(inbox.iterdir()) == []


def test_a_file_created_empty_and_filled_later_gets_one_row(tiny_model_path, sample_images,
                                                             tmp_path):
    inbox, out, failed = tmp_path / "inbox", tmp_path / "rows.jsonl", tmp_path / "failed"
    inbox.mkdir()
    data = sample_images[2].read_bytes()
    proc = _start(inbox, out, tiny_model_path, "--failed", str(failed))
    (inbox / "late.jpg").touch()
    time.sleep(2.0)  # empty for longer than --settle (not yet --give-up 3)
    assert _rows(out) == []
    (inbox / "late.jpg").write_bytes(data)
    _wait_for(lambda: len(_rows(out)) == 1, timeout=30)
    time.sleep(0.5)
    assert _stop(proc) == 0
    (row,) = _rows(out)
    _assert_row_is_for(row, data, tiny_model_path)
    assert not failed.exists() or list(failed.iterdir()) == []


def test_give_up_counts_from_the_last_change_not_from_first_seen(tiny_model_path,
                                                                  sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    data = sample_images[3].read_bytes()
    proc = _start(inbox, out, tiny_model_path, "--give-up", "1.5")
    with open(inbox / "pauses.jpg", "wb") as f:
        for part in range(1, 4):  # 3 pauses of 1 s: 3 s in all, > --give-up, no pause >= it
            f.write(data[(part - 1) * len(data) // 4: part * len(data) // 4])
            f.flush()
            time.sleep(1.0)
        f.write(data[3 * len(data) // 4:])
    _wait_for(lambda: len(_rows(out)) == 1, timeout=30)
    time.sleep(0.5)
    assert _stop(proc) == 0
    (row,) = _rows(out)
    _assert_row_is_for(row, data, tiny_model_path)


def test_names_in_progress_wait_and_give_up_and_moves(tiny_model_path, sample_images, tmp_path):
    inbox, out, done, failed = (tmp_path / n for n in ("inbox", "rows.jsonl", "done", "failed"))
    inbox.mkdir()
    proc = _start(inbox, out, tiny_model_path, "--done", str(done), "--failed", str(failed))
    shutil.copyfile(sample_images[0], inbox / "coming.jpg.part")
    data = sample_images[1].read_bytes()
    (inbox / "never_finished.jpg").write_bytes(data[: len(data) // 2])
    time.sleep(1.0)
    assert _rows(out) == []  # the .part is ignored, the half file is still being retried
    os.rename(inbox / "coming.jpg.part", inbox / "coming.jpg")
    _wait_for(lambda: len(_rows(out)) == 2, timeout=30)
    assert _stop(proc) == 0
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert rows["coming.jpg"]["error"] is None
    assert "truncated JPEG" in rows["never_finished.jpg"]["error"]
    assert [p.name for p in done.iterdir()] == ["coming.jpg"]
    assert [p.name for p in failed.iterdir()] == ["never_finished.jpg"]
    assert list(inbox.iterdir()) == []


def test_overlays_are_named_by_the_bytes_and_kept_out_of_the_scan(tiny_model_path,
                                                                  sample_images, tmp_path):
    import cv2

    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    overlays = inbox / "overlays"  # inside the inbox: created, and never read as images
    inbox.mkdir()
    proc = _start(inbox, out, tiny_model_path, "--overlay-dir", str(overlays))
    shutil.copyfile(sample_images[0], inbox / "a.jpg")
    (inbox / "broken.jpg").write_bytes(b"not an image")
    _wait_for(lambda: len(_rows(out)) == 2, timeout=30)
    time.sleep(1.0)  # a scan of the overlay folder would add rows now
    assert _stop(proc) == 0
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert len(_rows(out)) == 2 and rows["broken.jpg"]["overlay"] is None
    sha = hashlib.sha256(sample_images[0].read_bytes()).hexdigest()
    drawn = Path(rows["a.jpg"]["overlay"])
    assert drawn == overlays / f"a-{sha[:12]}.overlay.png"
    assert cv2.imread(str(drawn)) is not None and list(overlays.iterdir()) == [drawn]


def test_sigterm_exits_promptly_with_0(tiny_model_path, tmp_path):
    (tmp_path / "inbox").mkdir()
    proc = _start(tmp_path / "inbox", tmp_path / "rows.jsonl", tiny_model_path)
    time.sleep(2.0)
    started = time.monotonic()
    assert _stop(proc) == 0 and time.monotonic() - started < 5


def test_the_journal_repairs_a_cut_row_and_adopts_unrecorded_ones(tmp_path):
    out = tmp_path / "rows.jsonl"
    journal = ResultJournal.open(out, "json", None)
    a = tmp_path / "a.jpg"
    a.write_bytes(b"x")
    key_a = FileKey.of(a)
    row = lambda key: json.dumps({"path": key.path, **key.fields(), "error": None})  # noqa: E731
    journal.append([(key_a, row(key_a), True)])
    journal.close()
    b = tmp_path / "b.jpg"
    b.write_bytes(b"yy")
    key_b = FileKey.of(b)
    with open(out, "a") as f:  # a crash after writing b's row, before recording it...
        f.write(row(key_b) + "\n")
        f.write('{"path": "c.jpg", "lab')  # ...and one cut mid-row
    again = ResultJournal.open(out, "json", None)
    assert again.seen(key_a) and again.seen(key_b) and again.count == 2
    assert out.read_text().count("\n") == 2 and out.read_text().endswith("\n")
    with pytest.raises(ValueError, match="--output .* not JSON Lines"):
        out.write_text("path,label\n")
        (tmp_path / "rows.jsonl.journal.sqlite").unlink()
        ResultJournal.open(out, "json", None)
