"""`leukedge watch`: one process per output (an OS lock that dies with its process), --done and
--failed inside or equal to the inbox, outputs that are not regular files, and an output deleted
while running. Real processes, small waits."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from watch_helpers import distinct_jpeg, drop, rows, run_watch, start, stop, wait_for


def test_a_second_watch_on_the_same_output_exits_2_and_a_killed_one_leaves_no_block(
        tiny_model_path, sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.jsonl"
    inbox.mkdir()
    first = start(str(inbox), out, tiny_model_path)
    lock = tmp_path / "rows.jsonl.lock"
    wait_for(lambda: lock.exists() and str(first.pid) in lock.read_text(), timeout=30)
    second = run_watch(str(inbox), out, tiny_model_path)
    assert second.returncode == 2
    assert str(out) in second.stderr and f"pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGKILL)  # the lock file stays; the OS lock dies with the process
    first.wait(timeout=10)
    assert lock.exists()
    third = start(str(inbox), out, tiny_model_path)
    drop(inbox, "a.jpg", sample_images[0].read_bytes())
    wait_for(lambda: len(rows(out)) == 1, timeout=30)
    assert stop(third)[0] == 0


@pytest.mark.parametrize("flag", ["--done", "--failed"])
def test_done_or_failed_equal_to_the_inbox_is_refused(flag, tiny_model_path, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    result = run_watch(str(inbox), tmp_path / "rows.jsonl", tiny_model_path, flag,
                       str(inbox / "." / ""), "-r")
    assert result.returncode == 2
    assert flag in result.stderr and "inbox itself" in result.stderr
    assert not (tmp_path / "rows.jsonl").exists()


def test_done_and_output_inside_the_inbox_are_not_scanned(tiny_model_path, sample_images,
                                                          tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    out, done = inbox / "rows.jsonl", inbox / "done"
    proc = start(str(inbox), out, tiny_model_path, "-r", "--done", str(done))
    for i in range(3):
        drop(inbox, f"s{i}.jpg", distinct_jpeg(sample_images[i].read_bytes(), i))
    wait_for(lambda: len(list(done.glob("*.jpg"))) == 3, timeout=30)
    wait_for(lambda: len(rows(out)) == 3, timeout=30)
    (done / "again.jpg").write_bytes(distinct_jpeg(sample_images[5].read_bytes(), 5))
    import time

    time.sleep(1.0)  # anything in done/ would be classified now
    assert stop(proc)[0] == 0
    assert sorted(Path(r["path"]).name for r in rows(out)) == ["s0.jpg", "s1.jpg", "s2.jpg"]


def test_an_output_with_an_image_name_inside_the_inbox_is_refused(tiny_model_path, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    result = run_watch(str(inbox), inbox / "rows.jpg", tiny_model_path)
    assert result.returncode == 2 and "--output" in result.stderr
    assert list(inbox.iterdir()) == []


def test_an_output_that_is_the_model_is_refused(tiny_model_path, tmp_path):
    inbox, model = tmp_path / "inbox", tmp_path / "m.onnx"
    inbox.mkdir()
    model.write_bytes(tiny_model_path.read_bytes())
    result = run_watch(str(inbox), model, model)
    assert result.returncode == 2 and "--output" in result.stderr and "same file" in result.stderr
    assert model.read_bytes() == tiny_model_path.read_bytes()


@pytest.mark.parametrize("kind", ["dev_null", "fifo", "folder"])
def test_an_output_that_is_not_a_regular_file_is_refused(kind, tiny_model_path, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    if kind == "dev_null":
        out = Path(os.devnull)
    elif kind == "fifo":
        out = tmp_path / "rows.fifo"
        os.mkfifo(out)
    else:
        out = tmp_path / "rows.d"
        out.mkdir()
    before = set(os.listdir(out.parent))
    result = run_watch(str(inbox), out, tiny_model_path, timeout=30)
    assert result.returncode == 2
    assert "--output" in result.stderr and "not a regular file" in result.stderr
    assert set(os.listdir(out.parent)) == before  # no journal or lock in /dev


def test_an_output_deleted_mid_run_starts_again_with_its_csv_header(tiny_model_path,
                                                                    sample_images, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "rows.csv"
    inbox.mkdir()
    proc = start(str(inbox), out, tiny_model_path, "-f", "csv")
    drop(inbox, "a.jpg", sample_images[0].read_bytes())
    wait_for(lambda: out.exists() and out.read_text().count("\n") == 2, timeout=30)
    header = out.read_text().split("\n")[0]
    out.unlink()
    drop(inbox, "b.jpg", sample_images[1].read_bytes())
    wait_for(lambda: out.exists() and out.read_text().count("\n") == 2, timeout=30)
    code, err = stop(proc)
    assert code == 0 and "was deleted" in err and str(out) in err
    lines = out.read_text().split("\n")
    assert lines[0] == header and "b.jpg" in lines[1]
    again = start(str(inbox), out, tiny_model_path, "-f", "csv")  # a restart works (not exit 2)
    drop(inbox, "c.jpg", sample_images[2].read_bytes())
    wait_for(lambda: out.read_text().count("\n") == 3, timeout=30)
    assert stop(again)[0] == 0
    assert [line.split(",")[0].rsplit("/", 1)[-1] for line in out.read_text().split("\n")[1:-1]
            ] == ["b.jpg", "c.jpg"]
