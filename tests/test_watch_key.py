"""`leukedge watch`: the key of a row is the image's content, and every row format carries it,
so a lost journal is rebuilt from the output (JSON and CSV), a renamed image or the inbox under
another path gets no second row, and changed bytes get a new one."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import time
from pathlib import Path

import pytest

from watch_helpers import distinct_jpeg, drop, rows, start, stop, wait_for


def _csv_rows(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(out.read_text(), newline=""))) if out.exists() else []


def _table(out: Path, fmt: str) -> list[dict]:
    return rows(out) if fmt == "json" else _csv_rows(out)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_lost_journal_is_rebuilt_from_the_output(fmt, tiny_model_path, sample_images,
                                                   tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / f"rows.{fmt}"
    inbox.mkdir()
    datas = [distinct_jpeg(sample_images[i].read_bytes(), i) for i in range(3)]
    for i, data in enumerate(datas):
        drop(inbox, f"s{i}.jpg", data)
    proc = start(str(inbox), out, tiny_model_path, "-f", fmt)
    wait_for(lambda: len(_table(out, fmt)) == 3, timeout=30)
    assert stop(proc)[0] == 0
    for row, data in zip(sorted(_table(out, fmt), key=lambda r: r["path"]), datas):
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert int(row["size_bytes"]) == len(data) and int(row["mtime_ns"]) > 0
        assert os.path.basename(row["real_path"]) == os.path.basename(row["path"])
    for journal in tmp_path.glob(f"rows.{fmt}.journal.sqlite*"):
        journal.unlink()
    proc = start(str(inbox), out, tiny_model_path, "-f", fmt)
    time.sleep(2.0)
    assert stop(proc)[0] == 0
    assert len(_table(out, fmt)) == 3


def test_a_renamed_image_or_another_path_gets_no_row_and_changed_bytes_a_new_one(
        tiny_model_path, sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    from watch_helpers import rows

    data = sample_images[0].read_bytes()
    drop(inbox, "a.jpg", data)
    proc = start(str(inbox), out, tiny_model_path)
    wait_for(lambda: len(rows(out)) == 1, timeout=30)
    os.rename(inbox / "a.jpg", inbox / "renamed.jpg")
    time.sleep(1.0)
    assert len(rows(out)) == 1
    (inbox / "renamed.jpg").write_bytes(distinct_jpeg(data, 1))  # changed bytes: new image
    wait_for(lambda: len(rows(out)) == 2, timeout=30)
    assert stop(proc)[0] == 0
    other = tmp_path / "mounted_elsewhere"  # the same files reached through another path
    shutil.copytree(inbox, other, copy_function=shutil.copy2)
    proc = start(str(other), out, tiny_model_path)
    time.sleep(2.0)
    assert stop(proc)[0] == 0
    assert len(rows(out)) == 2


def test_a_watch_batch_holds_at_most_the_pixel_budget(tiny_model_path, sample_images, tmp_path,
                                                      monkeypatch):
    """Files are read into a batch only while their declared pixels fit the budget, so a burst
    of large frames is classified a few at a time, not 16 decoded frames at once."""
    import threading

    import leukedge.runtime.batching as batching
    from leukedge.cli.watch import WatchOptions
    from leukedge.cli.watcher import Watcher

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(6):
        (inbox / f"s{i}.jpg").write_bytes(distinct_jpeg(sample_images[i].read_bytes(), i))
    monkeypatch.setattr(batching, "PIXEL_BUDGET", 2 * 224 * 224)  # two 224 x 224 samples
    opts = WatchOptions(inbox, tmp_path / "rows.jsonl", "json", False, 0.1, 0.0, 3.0, 16,
                        str(tiny_model_path), "cpu", 1, None, None, None, 50_000_000)
    watcher = Watcher(opts, threading.Event())
    runs = []
    predict = watcher.classifier.predict_pixels_and_masks  # what watch calls per batch
    monkeypatch.setattr(watcher.classifier, "predict_pixels_and_masks",
                        lambda images, masks=True: runs.append(len(images)) or
                        predict(images, masks))
    watcher.inbox.scan()  # first sight; ready on the next scan (settle 0)
    watcher.tick()
    watcher.journal.close()
    assert runs == [2, 2, 2]
    assert len(rows(tmp_path / "rows.jsonl")) == 6
