"""The journal: content keys, rows of earlier versions (path keys, CSV without key columns),
names with Unicode line separators, failed writes that leave no partial row, and an output
deleted while open."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3

import pytest

from leukedge.runtime import journal as journal_module
from leukedge.runtime.journal import FileKey, JournalError, ResultJournal, WriteError, row_key

HEADER = "path,label"
KEYED_HEADER = HEADER + ",real_path,size_bytes,mtime_ns,sha256"


def _key(tmp_path, name: str, data: bytes) -> FileKey:
    (tmp_path / name).write_bytes(data)
    return FileKey.of(tmp_path / name)


def _line(key: FileKey, **extra) -> str:
    return json.dumps({"path": key.path, **key.fields(), "error": None, **extra},
                      ensure_ascii=False)


def test_the_key_is_the_content_whatever_the_path(tmp_path):
    a = _key(tmp_path, "a.jpg", b"pixels")
    b = _key(tmp_path, "renamed.jpg", b"pixels")
    assert a.text == b.text == f"sha256:{hashlib.sha256(b'pixels').hexdigest()}:6"
    assert a.path_text != b.path_text
    assert row_key(a.fields()) == a.text
    assert row_key({"real_path": "/x.jpg", "size_bytes": "3", "mtime_ns": "7"}) == \
        "/x.jpg\x1f3\x1f7"
    assert row_key({"path": "x", "size_bytes": "oops", "sha256": ""}) is None


def test_names_with_unicode_line_separators_survive_a_rebuild(tmp_path):
    out = tmp_path / "rows.jsonl"
    journal = ResultJournal.open(out, "json", None)
    keys = [_key(tmp_path, f"a{sep}b{i}.jpg", bytes([i])) for i, sep in
            enumerate(["\u2028", "\u2029", "\u0085", "\x0b"])]
    journal.append([(k, _line(k), True) for k in keys])
    journal.close()
    for path in tmp_path.glob("rows.jsonl.journal.sqlite*"):
        path.unlink()
    again = ResultJournal.open(out, "json", None)
    assert again.count == 4 and all(again.seen(k) for k in keys)


def test_rows_and_journals_of_the_previous_version_are_still_matched(tmp_path):
    out = tmp_path / "rows.jsonl"
    key = _key(tmp_path, "old.jpg", b"old")
    old_row = {"path": key.path, "real_path": key.path, "size_bytes": key.size,
               "mtime_ns": key.mtime_ns, "error": None}  # no sha256: keyed by path
    out.write_text(json.dumps(old_row) + "\n")
    journal = ResultJournal.open(out, "json", None)
    assert journal.status(key) is True  # found through its path key
    journal.close()
    other = _key(tmp_path, "other.jpg", b"other")
    db = sqlite3.connect(tmp_path / "rows.jsonl.journal.sqlite")
    db.execute("INSERT INTO rows VALUES (?, ?, 1, 0)", (other.path_text, other.path))
    db.commit()
    db.close()
    assert ResultJournal.open(out, "json", None).seen(other)


def test_a_csv_of_the_previous_version_gets_the_key_columns(tmp_path):
    out = tmp_path / "rows.csv"
    out.write_text(HEADER + '\n"a\nb.jpg",Pro\nc.jpg,Pre\n')
    journal = ResultJournal.open(out, "csv", KEYED_HEADER, legacy_header=HEADER)
    assert out.read_text() == KEYED_HEADER + '\n"a\nb.jpg",Pro,,,,\nc.jpg,Pre,,,,\n'
    assert "earlier leukedge" in journal.notices[0]
    key = _key(tmp_path, "d.jpg", b"d")
    f = key.fields()
    journal.append([(key, f"d.jpg,Pro,{f['real_path']},{key.size},{key.mtime_ns},{key.sha256}",
                     True)])
    journal.close()
    for path in tmp_path.glob("rows.csv.journal.sqlite*"):
        path.unlink()
    again = ResultJournal.open(out, "csv", KEYED_HEADER, legacy_header=HEADER)
    assert again.seen(key) and again.count == 1 and again.notices == []
    with pytest.raises(ValueError, match="--output .* holds other rows"):
        out.write_text("something,else\n")
        ResultJournal.open(out, "csv", KEYED_HEADER, legacy_header=HEADER)


def test_a_full_disk_leaves_no_partial_row_and_the_retry_writes_once(tmp_path, monkeypatch):
    out = tmp_path / "rows.jsonl"
    journal = ResultJournal.open(out, "json", None)
    keys = [_key(tmp_path, f"{i}.jpg", bytes([i]) * 10) for i in range(3)]
    rows = [(k, _line(k), True) for k in keys]
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 40:
            return real_write(fd, bytes(data[:40]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full)
    with pytest.raises(WriteError, match="cannot write --output .*No space left") as caught:
        journal.append(rows)
    assert caught.value.full and out.read_bytes() == b""
    monkeypatch.setattr(journal_module.os, "write", real_write)
    journal.append(rows)
    journal.append(rows)  # a retry of rows already written writes nothing
    assert out.read_text().count("\n") == 3 and journal.count == 3


def test_a_journal_that_fails_after_the_rows_were_written_repeats_none(tmp_path):
    out = tmp_path / "rows.jsonl"
    journal = ResultJournal.open(out, "json", None)
    key = _key(tmp_path, "a.jpg", b"a")

    class FullDisk:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("BEGIN"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

    real = journal.db
    journal.db = FullDisk(real)
    with pytest.raises(WriteError, match="cannot write journal") as caught:
        journal.append([(key, _line(key), True)])
    assert caught.value.full and journal.seen(key)
    journal.db = real
    journal.append([(key, _line(key), True)])
    assert out.read_text().count("\n") == 1 and journal.count == 1


def test_an_output_deleted_while_open_is_started_again_with_its_header(tmp_path):
    out = tmp_path / "rows.csv"
    journal = ResultJournal.open(out, "csv", HEADER)
    a, b = _key(tmp_path, "a.jpg", b"a"), _key(tmp_path, "b.jpg", b"b")
    journal.append([(a, "a.jpg,Pro", True)])
    out.unlink()
    journal.append([(b, "b.jpg,Pre", True)])
    assert out.read_text() == HEADER + "\nb.jpg,Pre\n"
    assert "was deleted" in journal.notices[0]


@pytest.mark.parametrize("kind", ["garbage", "folder"])
def test_an_unusable_journal_names_itself_and_what_to_do(kind, tmp_path):
    path = tmp_path / "rows.jsonl.journal.sqlite"
    path.mkdir() if kind == "folder" else path.write_bytes(b"garbage" * 200)
    with pytest.raises(JournalError, match=r"journal .*rows.jsonl.journal.sqlite.*delete it"):
        ResultJournal.open(tmp_path / "rows.jsonl", "json", None)


@pytest.mark.parametrize("target", ["/dev/null", "fifo"])
def test_an_output_that_is_not_a_file_is_refused_before_any_journal(target, tmp_path):
    out = tmp_path / "fifo" if target == "fifo" else journal_module.Path(target)
    if target == "fifo":
        os.mkfifo(out)
    with pytest.raises(ValueError, match="--output .* not a regular file"):
        ResultJournal.open(out, "json", None)
    assert not os.path.exists(str(out) + ".journal.sqlite")
