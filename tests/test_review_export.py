"""`leukedge review export`: decided images copied into OUT/<label>/ (the layout validate
reads), the last decision winning, nothing moved or overwritten, problems reported."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.modelkit.dataset import discover_dataset
from leukedge.runtime.review_audit import AuditTrail
from leukedge.runtime.review_export import export_decisions
from review_helpers import make_images

runner = CliRunner()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_audit(path, decisions: list[tuple]) -> None:
    """(image path, label) pairs as an audit file, hashed as the station hashes them."""
    trail = AuditTrail.open(path)
    for image, label in decisions:
        trail.append({"path": str(image), "file": str(image), "sha256": sha(image),
                      "model": "tiny.onnx", "model_sha256": "0" * 64, "predicted": "Pre",
                      "confidence": 0.5, "label": label, "reviewer": "Dr. A",
                      "time": "2025-01-31T09:00:00.000+00:00", "replaces": None})
    trail.close()


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "imgs", 6)


def test_decided_images_land_in_their_label_folder(images, tmp_path):
    audit = tmp_path / "audit.jsonl"
    write_audit(audit, [(images[0], "Pre"), (images[1], "Benign"), (images[2], "Early"),
                        (images[3], "Pro"), (images[0], "Pro")])  # images[0]: the last wins
    out = tmp_path / "lab"
    report = export_decisions(audit, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "Benign/smear01.png", "Early/smear02.png", "Pro/smear00.png", "Pro/smear03.png"]
    assert len(report.copied) == 4 and not report.problems
    assert sha(out / "Pro" / "smear00.png") == sha(images[0])
    assert all(p.exists() for p in images)  # copied, never moved
    dataset = discover_dataset(out, classes=("Benign", "Early", "Pro"))
    assert len(dataset.records) == 4  # the folder validate reads
    again = export_decisions(audit, out)  # run twice: nothing new, nothing renamed
    assert len(again.already) == 4 and not again.copied and not again.renamed


def test_a_name_clash_gets_a_suffix_and_a_missing_image_is_reported(images, tmp_path):
    other = make_images(tmp_path / "elsewhere", 1, seed=3)[0]  # also named smear00.png
    audit = tmp_path / "audit.jsonl"
    write_audit(audit, [(images[0], "Pro"), (other, "Pro"), (images[1], "Pre"),
                        (images[2], "Pre")])
    images[1].unlink()
    images[2].write_bytes(images[3].read_bytes())  # changed since it was decided
    out = tmp_path / "lab"
    (out / "Pro").mkdir(parents=True)
    mine = out / "Pro" / "smear00.png"
    mine.write_bytes(b"a file the lab already had")
    report = export_decisions(audit, out)
    assert mine.read_bytes() == b"a file the lab already had"  # never overwritten
    assert sorted(p.name for p in (out / "Pro").iterdir()) == [
        "smear00-2.png", "smear00-3.png", "smear00.png"]
    assert len(report.renamed) == 2
    problems = dict(report.problems)
    assert "cannot read it" in problems[str(images[1])]
    assert "changed since it was decided" in problems[str(images[2])]
    assert not (out / "Pre").exists() or not any((out / "Pre").iterdir())


def test_the_cli_reports_and_exits_1_when_something_was_not_exported(images, tmp_path):
    audit = tmp_path / "audit.jsonl"
    write_audit(audit, [(images[0], "Pro"), (images[1], "Pre")])
    out = tmp_path / "lab"
    ok = runner.invoke(app, ["review", "export", str(audit), "--out", str(out)])
    assert ok.exit_code == 0 and "2 images copied" in ok.output
    write_audit(audit, [(images[0], "Early")])  # the decision changed; then export again
    images[1].unlink()
    result = runner.invoke(app, ["review", "export", str(audit), "--out", str(out)])
    assert result.exit_code == 1
    assert "is also in" in result.output and "Pro/smear00.png" in result.output
    assert "cannot read it" in result.output and "1 not exported" in result.output


def test_a_broken_audit_is_not_exported(images, tmp_path):
    audit = tmp_path / "audit.jsonl"
    write_audit(audit, [(images[0], "Pro"), (images[1], "Pre")])
    audit.write_text(audit.read_text().replace('"Pro"', '"Pre"', 1))
    result = runner.invoke(app, ["review", "export", str(audit), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "line 1 was altered" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("label", ["..", "a/b", "", "x\\y"])
def test_a_label_that_is_not_a_folder_name_is_refused(images, tmp_path, label):
    audit = tmp_path / "audit.jsonl"
    write_audit(audit, [(images[0], label)])
    report = export_decisions(audit, tmp_path / "lab")
    assert "cannot be a folder name" in report.problems[0][1]
    assert list((tmp_path / "lab").iterdir()) == []
