"""The inbox's building blocks: readiness and give-up from the last change, names compared as
the OS compares them, problems said once, one consistent read of a file, the output lock (POSIX
and, with a stand-in msvcrt, Windows), and moves that never leave a partial copy."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import types
from pathlib import Path

import pytest

from leukedge.runtime import lock as lock_module
from leukedge.runtime import moves, snapshot
from leukedge.runtime.decode import ImageError
from leukedge.runtime.inbox import Inbox, is_inside
from leukedge.runtime.lock import LockHeld, hold_lock
from leukedge.runtime.snapshot import NotReady, read_snapshot


def test_give_up_counts_from_the_last_change(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"1")
    inbox = Inbox(tmp_path, settle=1.0, give_up=5.0, retry_after=1.0)
    assert inbox.scan(now=0.0) == [] and inbox.scan(now=1.0) == [Path(tmp_path / "a.jpg")]
    assert inbox.retry_later(tmp_path / "a.jpg", now=1.0)
    (tmp_path / "a.jpg").write_bytes(b"12")  # still growing at t=4
    inbox.scan(now=4.0)
    assert inbox.scan(now=6.0) == [tmp_path / "a.jpg"]
    assert inbox.retry_later(tmp_path / "a.jpg", now=8.9)  # 6 s after first seen, 4.9 after change
    assert not inbox.retry_later(tmp_path / "a.jpg", now=9.0)


def test_names_are_compared_as_the_os_compares_them(tmp_path, monkeypatch):
    monkeypatch.setattr(os.path, "normcase", lambda p: os.fspath(p).lower())  # Windows
    (tmp_path / "A.JPG").write_bytes(b"1")
    inbox = Inbox(tmp_path, settle=0.0)
    inbox.scan(now=0.0)
    inbox.mark_done(tmp_path / "a.jpg", 1, os.stat(tmp_path / "A.JPG").st_mtime_ns)
    assert inbox.scan(now=1.0) == [] and inbox.pending == 0
    assert is_inside(tmp_path / "Sub" / "x", str(tmp_path).upper())


def test_excluded_folders_are_not_scanned_and_problems_are_said_once(tmp_path):
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "x.jpg").write_bytes(b"1")
    (tmp_path / "y.jpg").write_bytes(b"1")
    inbox = Inbox(tmp_path, recursive=True, settle=0.0, exclude=[tmp_path / "done"])
    inbox.scan(now=0.0)
    assert inbox.scan(now=1.0) == [tmp_path / "y.jpg"]
    missing = Inbox(tmp_path / "gone", settle=0.0)
    missing.scan(now=0.0)
    assert [p for p, _ in missing.new_problems()] == [str(tmp_path / "gone")]
    missing.scan(now=1.0)
    assert missing.new_problems() == []


def test_a_file_that_changes_while_read_is_not_ready(tmp_path, monkeypatch):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 100)
    real_read = os.read
    grown = []

    def read_and_grow(fd, n):  # the writer appends once, while the first chunk is read
        data = real_read(fd, n)
        if not grown:
            grown.append(True)
            with open(path, "ab") as f:
                f.write(b"more")
        return data

    monkeypatch.setattr(snapshot.os, "read", read_and_grow)
    with pytest.raises(NotReady) as caught:
        read_snapshot(path)
    assert caught.value.why == "changed"


def test_a_file_held_open_by_its_writer_on_windows_is_busy(tmp_path, monkeypatch):
    def sharing_violation(*args):
        error = PermissionError(13, "The process cannot access the file")
        error.winerror = 32
        raise error

    monkeypatch.setattr(snapshot.os, "open", sharing_violation)
    with pytest.raises(NotReady) as caught:
        read_snapshot(tmp_path / "a.jpg")
    assert caught.value.why == "busy"


def test_a_snapshot_is_the_bytes_and_their_size_and_time(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"abc")
    snap = read_snapshot(path)
    assert (snap.data, snap.size, snap.mtime_ns) == (b"abc", 3, os.stat(path).st_mtime_ns)
    os.mkfifo(tmp_path / "f.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        read_snapshot(tmp_path / "f.jpg")


def test_the_lock_is_exclusive_names_the_pid_and_dies_with_its_handle(tmp_path):
    first = hold_lock(tmp_path / "rows.jsonl.lock")
    with pytest.raises(LockHeld) as caught:
        hold_lock(tmp_path / "rows.jsonl.lock")
    assert caught.value.pid == os.getpid()
    first.release()  # what the OS does when the process dies
    hold_lock(tmp_path / "rows.jsonl.lock").release()


def test_the_lock_uses_msvcrt_where_there_is_no_fcntl(tmp_path, monkeypatch):
    calls = []

    def locking(fd, mode, n):
        calls.append((os.lseek(fd, 0, os.SEEK_CUR), mode, n))
        if len(calls) > 1:
            raise PermissionError(errno.EACCES, "Permission denied")

    fake = types.SimpleNamespace(LK_NBLCK=2, locking=locking)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` fails, as on Windows
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    held = hold_lock(tmp_path / "x.lock")
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        hold_lock(tmp_path / "x.lock")
    assert calls[0] == (lock_module.LOCK_OFFSET, 2, 1)
    held.release()


def test_a_taken_long_name_gets_a_shorter_unique_one(tmp_path):
    name = "é" * 125 + "x.jpg"
    (tmp_path / name).write_bytes(b"1")
    target = moves.unique_target(tmp_path, name)
    assert target.name.endswith("-2.jpg") and len(os.fsencode(target.name)) <= 255
    assert target.name.encode("utf-8")  # whole characters: still valid UTF-8


def test_a_cross_device_move_that_fails_leaves_no_partial_copy(tmp_path, monkeypatch):
    src, done = tmp_path / "a.jpg", tmp_path / "done"
    src.write_bytes(b"x" * 1000)
    done.mkdir()
    real_rename = os.rename

    def cross_device(a, b):
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(a, b)

    def copy_half(a, b):
        Path(b).write_bytes(b"x" * 500)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(moves.os, "rename", cross_device)
    monkeypatch.setattr(shutil, "copyfile", copy_half)
    with pytest.raises(OSError, match="No space"):
        moves.move_into(src, done)
    assert list(done.iterdir()) == [] and src.read_bytes() == b"x" * 1000
    monkeypatch.undo()
    monkeypatch.setattr(moves.os, "rename", cross_device)
    assert moves.move_into(src, done) == done / "a.jpg" and not src.exists()
