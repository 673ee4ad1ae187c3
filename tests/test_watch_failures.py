"""`leukedge watch` never stops for good: odd file names, an unusable journal, a full disk, a
move that fails, a deleted inbox and an unreadable subfolder are each a message naming the path
and what to do, and the other files go on. Real processes, small waits."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from watch_helpers import distinct_jpeg, drop, rows, start, stop, unprivileged, wait_for


def test_a_name_with_a_non_utf8_byte_gets_its_row(tiny_model_path, sample_images, tmp_path):
    inbox, out, done = tmp_path / "inbox", tmp_path / "rows.jsonl", tmp_path / "done"
    inbox.mkdir()
    fd = os.open(os.fsencode(inbox) + b"/scan\xff.jpg", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, sample_images[0].read_bytes())
    os.close(fd)
    proc = start(str(inbox), out, tiny_model_path, "--done", str(done))
    wait_for(lambda: len(rows(out)) == 1, timeout=30)
    wait_for(lambda: os.listdir(os.fsencode(done)) == [b"scan\xff.jpg"], timeout=10)
    assert stop(proc)[0] == 0
    (row,) = rows(out)
    assert row["error"] is None and row["path"].endswith("scan\\xff.jpg")
    assert row["real_path"].endswith("scan\\xff.jpg")


def test_a_255_byte_name_already_in_done_gets_a_shorter_unique_name(tiny_model_path,
                                                                     sample_images, tmp_path):
    inbox, out, done = tmp_path / "inbox", tmp_path / "rows.jsonl", tmp_path / "done"
    inbox.mkdir()
    done.mkdir()
    name = "é" * 125 + "x.jpg"  # 250 + 5 = 255 bytes
    assert len(name.encode()) == 255
    (done / name).write_bytes(b"an earlier image")
    (inbox / name).write_bytes(sample_images[0].read_bytes())  # before watch starts
    proc = start(str(inbox), out, tiny_model_path, "--done", str(done))
    wait_for(lambda: len(list(done.iterdir())) == 2, timeout=30)
    assert stop(proc)[0] == 0
    assert (done / name).read_bytes() == b"an earlier image"
    (moved,) = [p for p in done.iterdir() if p.name != name]
    assert moved.name.endswith("-2.jpg") and len(os.fsencode(moved.name)) <= 255
    assert moved.read_bytes() == sample_images[0].read_bytes() and len(rows(out)) == 1


@pytest.mark.parametrize("kind", ["garbage", "folder", "read_only"])
def test_an_unusable_journal_exits_2_naming_it(kind, tiny_model_path, sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    journal = tmp_path / "rows.jsonl.journal.sqlite"
    prefix: list = []
    if kind == "garbage":
        journal.write_bytes(b"this is not a database" * 100)
    elif kind == "folder":
        journal.mkdir()
    else:
        db = sqlite3.connect(journal)
        db.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, path TEXT, ok INTEGER, "
                   "written_at REAL)")
        db.close()
        journal.chmod(0o444)
        prefix = unprivileged()
    drop(inbox, "a.jpg", sample_images[0].read_bytes())
    proc = start(str(inbox), out, tiny_model_path, prefix=prefix)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    err = err.decode()
    assert str(journal) in err and "delete it" in err and "Traceback" not in err


def test_a_full_disk_waits_and_loses_or_repeats_no_row(tiny_model_path, sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    out.write_text('{"note": "' + "x" * 1_000_000 + '"}\n')  # a row without a key: ignored
    limit = out.stat().st_size + 1500  # room for about one row, then "disk full" (EFBIG)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    proc = start(str(inbox), out, tiny_model_path, "--batch-size", "1", preexec_fn=small_disk)
    for i in range(4):
        drop(inbox, f"s{i}.jpg", distinct_jpeg(sample_images[i].read_bytes(), i))
    time.sleep(4.0)  # the disk is full by now: waiting, saying so
    assert proc.poll() is None and len(rows(out)) < 4
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space freed
    wait_for(lambda: len(rows(out)) == 4, timeout=30)
    time.sleep(0.5)
    code, err = stop(proc)
    assert code == 0 and "disk full, waiting" in err and str(out) in err
    names = sorted(Path(r["path"]).name for r in rows(out))
    assert names == ["s0.jpg", "s1.jpg", "s2.jpg", "s3.jpg"]
    assert out.read_bytes().endswith(b"}\n")


def test_a_move_that_fails_leaves_the_image_and_repeats_no_row(tiny_model_path, sample_images,
                                                               tmp_path):
    inbox, out, done = tmp_path / "inbox", tmp_path / "rows.jsonl", tmp_path / "done"
    inbox.mkdir()
    done.mkdir()
    for folder in (tmp_path, inbox):
        folder.chmod(0o777)
    done.chmod(0o555)  # no permission to move into it
    drop(inbox, "a.jpg", sample_images[0].read_bytes())
    proc = start(str(inbox), out, tiny_model_path, "--done", str(done), prefix=unprivileged())
    wait_for(lambda: len(rows(out)) == 1, timeout=30)
    time.sleep(1.0)  # scans go on: no second row, no second warning
    code, err = stop(proc)
    assert code == 0 and err.count("stays in the inbox") == 1 and str(inbox / "a.jpg") in err
    assert (inbox / "a.jpg").exists() and list(done.iterdir()) == []
    done.chmod(0o755)
    proc = start(str(inbox), out, tiny_model_path, "--done", str(done))
    wait_for(lambda: (done / "a.jpg").exists(), timeout=30)
    assert stop(proc)[0] == 0 and len(rows(out)) == 1


def test_a_deleted_inbox_is_reported_once_and_watch_resumes(tiny_model_path, sample_images,
                                                            tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    proc = start(str(inbox), out, tiny_model_path)
    time.sleep(1.5)
    shutil.rmtree(inbox)
    time.sleep(1.0)  # ten scans of a missing inbox
    inbox.mkdir()
    drop(inbox, "back.jpg", sample_images[0].read_bytes())
    wait_for(lambda: len(rows(out)) == 1, timeout=30)
    code, err = stop(proc)
    assert code == 0 and err.count("inbox folder is missing") == 1 and str(inbox) in err


def test_an_unreadable_subfolder_is_reported_once(tiny_model_path, sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    (inbox / "locked").mkdir(parents=True)
    for folder in (tmp_path, inbox):
        folder.chmod(0o777)
    (inbox / "locked").chmod(0)
    drop(inbox, "ok.jpg", sample_images[0].read_bytes())
    proc = start(str(inbox), out, tiny_model_path, "-r", prefix=unprivileged())
    wait_for(lambda: len(rows(out)) == 1, timeout=30)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    (inbox / "locked").chmod(stat.S_IRWXU)
    err = err.decode()
    assert proc.returncode == 0 and err.count(str(inbox / "locked")) == 1, err
    assert "cannot read folder" in err
