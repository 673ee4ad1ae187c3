"""`leukedge watch`: every image exactly one row, across SIGKILL at any moment; files written in
two halves; names still being written; give-up; moves; SIGTERM. Real processes, real files."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leukedge.runtime.journal import FileKey, ResultJournal

LEUKEDGE = [sys.executable, "-m", "leukedge.cli"]


def _start(inbox: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*LEUKEDGE, "watch", str(inbox), "-o", str(out), "-m", str(model),
                             "--settle", "0.2", "--poll", "0.1", "--give-up", "3", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _rows(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def test_every_image_gets_exactly_one_row_across_sigkills(tiny_model_path, sample_images,
                                                           tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    rng = random.Random(7)
    names = []
    proc = _start(inbox, out, tiny_model_path)
    for i in range(30):
        name = f"scan_{i:03d}.jpg"
        shutil.copyfile(sample_images[i % len(sample_images)], inbox / name)
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


def test_a_file_written_in_two_halves_gets_one_good_row(tiny_model_path, sample_images, tmp_path):
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
    assert row["error"] is None and row["label"]


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
    row = lambda key: json.dumps({"path": key.path, "real_path": key.path,  # noqa: E731
                                  "size_bytes": key.size, "mtime_ns": key.mtime_ns, "error": None})
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
