"""Finding images (each once, loops walked once, unreadable folders reported) and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from leukedge.runtime.files import atomic_write_text, find_images, list_images


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_patterns_and_files(tmp_path):
    a = _touch(tmp_path / "a" / "1.jpg")
    b = _touch(tmp_path / "a" / "sub" / "2.PNG")
    _touch(tmp_path / "a" / "notes.txt")
    _touch(tmp_path / "a" / ".hidden.jpg")
    assert list_images([tmp_path / "a"]) == [a]
    assert list_images([tmp_path / "a"], recursive=True) == [a, b]
    assert list_images([str(tmp_path / "a" / "*.jpg")]) == [a]
    assert list_images([str(tmp_path / "**" / "*.PNG")], recursive=True) == [b]
    missing = tmp_path / "missing.jpg"
    assert list_images([missing]) == [missing]  # named files are kept: the caller reports them


def test_each_real_file_once(tmp_path):
    a = _touch(tmp_path / "imgs" / "1.jpg")
    (tmp_path / "alias.jpg").symlink_to(a)
    found = list_images([tmp_path / "imgs", a, tmp_path / "alias.jpg",
                         str(tmp_path / "imgs" / "*.jpg")])
    assert found == [a]


def test_folder_symlink_loops_are_walked_once(tmp_path):
    root = tmp_path / "scan"
    a = _touch(root / "x" / "1.jpg")
    (root / "x" / "loop").symlink_to(root)
    (root / "x" / "loop2").symlink_to(root / "x")
    assert list_images([root], recursive=True) == [a]
    assert list_images([str(root / "**" / "*.jpg")], recursive=True) == [a]


def test_unreadable_folders_are_reported(tmp_path, monkeypatch):
    _touch(tmp_path / "ok" / "1.jpg")
    locked = tmp_path / "ok" / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = find_images([tmp_path / "ok"], recursive=True)
    assert [p.name for p in listing.paths] == ["1.jpg"]
    assert listing.problems == [(str(locked), "cannot read folder (Permission denied)")]
    named = find_images([locked])
    assert named.paths == [] and named.problems


def test_atomic_write_keeps_the_mode_and_refuses_devices(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_files_left_out_for_their_suffix_are_listed(tmp_path):
    for name in ("a.jpg", "b.avif", "c.GIF", "d.heic", ".hidden.gif", "sub/e.jp2", "sub/f.png"):
        _touch(tmp_path / name)
    listing = find_images([tmp_path])
    assert [p.name for p in listing.paths] == ["a.jpg"]
    assert [p.name for p in listing.skipped] == ["b.avif", "c.GIF", "d.heic"]
    listing = find_images([tmp_path], recursive=True)
    assert [p.name for p in listing.skipped] == ["b.avif", "c.GIF", "d.heic", "e.jp2"]
    assert find_images([tmp_path / "b.avif"]).skipped == []  # named: kept, reported per file
