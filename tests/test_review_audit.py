"""The review audit trail: a hash chain that names the first altered, missing or cut line,
written once per decision by one locked writer; `leukedge review verify`."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.runtime.review_audit import (ZERO_HASH, AuditError, AuditTrail, check_chain,
                                           read_records, verify_audit)

runner = CliRunner()


def decision(i: int) -> dict:
    return {"path": f"img{i}.jpg", "file": f"/lab/img{i}.jpg", "sha256": f"{i:064x}",
            "model": "default", "model_sha256": "ab" * 32, "predicted": "Pre",
            "confidence": 0.5, "label": "Pro", "reviewer": "Dr. A",
            "time": "2025-01-31T09:00:00.000+00:00", "replaces": None}


@pytest.fixture
def audit(tmp_path):
    """An audit file of five decisions (the trail closed again)."""
    path = tmp_path / "results.jsonl.audit.jsonl"
    trail = AuditTrail.open(path)
    for i in range(5):
        trail.append(decision(i))
    trail.close()
    return path


def lines_of(path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def test_each_line_names_the_hash_of_the_line_before(audit):
    lines = lines_of(audit)
    records = [json.loads(line) for line in lines]
    assert records[0]["prev_sha256"] == ZERO_HASH
    for before, record in zip(lines, records[1:]):
        assert record["prev_sha256"] == hashlib.sha256(before).hexdigest()
    assert list(records[0]) == ["audit", "path", "file", "sha256", "model", "model_sha256",
                                "predicted", "confidence", "label", "reviewer", "time",
                                "replaces", "prev_sha256"]
    check = verify_audit(audit)
    assert check.ok and check.lines == 5
    assert check.head_sha256 == hashlib.sha256(lines[-1]).hexdigest()


def test_append_answers_the_line_and_the_new_head(tmp_path):
    trail = AuditTrail.open(tmp_path / "a.jsonl")
    first = trail.append(decision(0))
    second = trail.append(decision(1))
    trail.close()
    assert (first["line"], second["line"]) == (1, 2)
    assert second["prev_sha256"] == first["line_sha256"]
    assert "line" not in json.loads(lines_of(tmp_path / "a.jsonl")[0])  # not written


def rewrite(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_an_altered_line_is_named(audit):
    lines = lines_of(audit)
    lines[2] = lines[2].replace(b'"label": "Pro"', b'"label": "Pre"')
    rewrite(audit, lines)
    check = verify_audit(audit)
    assert not check.ok and check.bad_line == 3 and check.lines == 3
    assert "line 4: prev_sha256 does not match line 3: line 3 was altered" in check.problem
    with pytest.raises(AuditError, match="line 3 was altered"):
        read_records(audit)


@pytest.mark.parametrize("change, bad, words", [
    (lambda lines: lines[:1] + lines[2:], 1, "line 2: prev_sha256 does not match line 1"),
    (lambda lines: lines[1:], 1, "line 1: prev_sha256 is not 64 zeros"),
    (lambda lines: lines[:3] + [b"{not json"] + lines[4:], 4, "line 4 is not a JSON line"),
    (lambda lines: lines[:2] + [b'{"path": "x"}'] + lines[3:], 3, "line 3 lacks sha256"),
])
def test_a_removed_or_broken_line_is_named(audit, change, bad, words):
    rewrite(audit, change(lines_of(audit)))
    check = verify_audit(audit)
    assert check.bad_line == bad and words in check.problem


def test_a_cut_last_line_is_named(audit):
    audit.write_bytes(audit.read_bytes()[:-30])
    check = verify_audit(audit)
    assert check.bad_line == 5 and "line 5 is incomplete" in check.problem


def test_a_broken_chain_is_never_appended_to(audit):
    audit.write_bytes(audit.read_bytes()[:-1])  # the last newline lost
    with pytest.raises(AuditError, match="line 5 is incomplete.*no decision is added"):
        AuditTrail.open(audit)


def test_one_writer_per_audit_file(audit):
    trail = AuditTrail.open(audit)
    try:
        with pytest.raises(AuditError, match="written by another process"):
            AuditTrail.open(audit)  # the OS lock: flock is per open file, also in one process
    finally:
        trail.close()


def test_threads_deciding_at_once_keep_the_chain_whole(tmp_path):
    trail = AuditTrail.open(tmp_path / "a.jsonl")
    workers = [threading.Thread(target=lambda k=k: [trail.append(decision(10 * k + i))
                                                    for i in range(10)]) for k in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    trail.close()
    check, records = check_chain((tmp_path / "a.jsonl").read_bytes())
    assert check.ok and check.lines == 80 and len({r["path"] for r in records}) == 80


def test_verify_exit_codes(audit, tmp_path):
    ok = runner.invoke(app, ["review", "verify", str(audit)])
    assert ok.exit_code == 0 and "chain intact, 5 decisions; head sha256" in ok.output
    lines = lines_of(audit)
    rewrite(audit, lines[:1] + [lines[1].replace(b"Dr. A", b"Dr. B")] + lines[2:])
    broken = runner.invoke(app, ["review", "verify", str(audit)])
    assert broken.exit_code == 1
    assert "line 2 was altered" in broken.output and "(line 1 is intact)" in broken.output
    missing = runner.invoke(app, ["review", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "is not a file" in missing.output
    usage = runner.invoke(app, ["review", "verify"])
    assert usage.exit_code == 2
