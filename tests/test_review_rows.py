"""Results files read for review: both formats `leukedge infer` writes, read live as they grow."""

from __future__ import annotations

import json
import os

import pytest

from leukedge.runtime.review_rows import ResultsFile, split_records
from review_helpers import infer_results, make_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("rows") / "imgs", 5)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_infer_results_are_read_with_every_field(tiny_model_path, images, tmp_path, fmt):
    out = infer_results(tiny_model_path, images, tmp_path / f"results.{fmt}", fmt)
    results = ResultsFile(out)
    assert results.refresh() is True
    assert results.fmt == fmt and results.problems == []
    rows = list(results.latest.values())
    assert [r.path for r in rows] == [str(p) for p in images]
    for row in rows:
        assert row.needs_review is True and row.error is None  # --review-below 1.0
        assert set(row.probabilities) == {"Benign", "Early", "Pre", "Pro"}
        assert row.label == max(row.probabilities, key=row.probabilities.get)
        assert row.confidence == pytest.approx(row.probabilities[row.label], abs=1e-6)
        assert row.reasons and all(r["message"] for r in row.reasons)
        assert row.model == tiny_model_path.name and len(row.model_sha256) == 64
    if fmt == "json":  # CSV has no columns for the measures, nor reason codes
        assert {"contrast", "stain_coverage"} <= set(rows[0].input_checks)
        assert rows[0].reasons[0]["code"] == "low_confidence"
    else:
        assert rows[0].input_checks is None and rows[0].reasons[0]["code"] is None
    assert results.refresh() is False  # nothing changed: nothing read


def test_a_growing_file_is_read_live_and_a_half_line_waits(tmp_path):
    path = tmp_path / "watch.jsonl"
    row = {"path": "a.jpg", "label": "Pre", "confidence": 0.5, "needs_review": True,
           "probabilities": {"Pre": 0.5, "Pro": 0.5}, "review_reasons": []}
    path.write_text(json.dumps(row) + "\n")
    results = ResultsFile(path)
    results.refresh()
    assert list(results.latest) == ["a.jpg"]
    second = json.dumps({**row, "path": "b.jpg"})
    with open(path, "a") as f:
        f.write(second[:20])  # watch is half-way through a line
    results.refresh()
    assert list(results.latest) == ["a.jpg"] and results.problems == []
    with open(path, "a") as f:
        f.write(second[20:] + "\n" + json.dumps({**row, "label": "Pro"}) + "\n")
    assert results.refresh() is True
    assert list(results.latest) == ["b.jpg", "a.jpg"]  # a.jpg's newer row is the one kept
    assert results.latest["a.jpg"].label == "Pro" and results.rows_read == 3


def test_a_replaced_file_is_read_again(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"path": "old.jpg", "needs_review": True}) + "\n")
    results = ResultsFile(path)
    results.refresh()
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(json.dumps({"path": "new.jpg", "needs_review": False}) + "\n")
    os.replace(replacement, path)  # what infer's atomic write does
    assert results.refresh() is True
    assert list(results.latest) == ["new.jpg"]
    path.unlink()
    assert results.refresh() is True and results.latest == {}


def test_a_csv_field_with_a_newline_stays_in_its_row(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text('path,label,confidence,needs_review,review_reasons,prob_Pre,prob_Pro\n'
                    '"odd\nname.jpg",Pre,0.6,true,low confidence (0.600 < 0.9),0.6,0.4\n'
                    'b.jpg,Pro,0.9,false,,0.1,0.9\n"c.jpg,Pro')  # the last row is half-written
    results = ResultsFile(path)
    results.refresh()
    assert list(results.latest) == ["odd\nname.jpg", "b.jpg"]
    odd = results.latest["odd\nname.jpg"]
    assert odd.probabilities == {"Pre": 0.6, "Pro": 0.4} and odd.needs_review
    assert odd.reasons == [{"code": None, "message": "low confidence (0.600 < 0.9)"}]
    assert results.latest["b.jpg"].needs_review is False


def test_lines_that_are_not_rows_are_named_and_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"path": "a.jpg", "needs_review": true}\nnot json\n[1, 2]\n'
                    '{"path": "b.jpg", "needs_review": true}\n')
    results = ResultsFile(path)
    results.refresh()
    assert list(results.latest) == ["a.jpg", "b.jpg"]
    assert results.problem_count == 2
    assert results.problems[0].startswith("results.jsonl line 2: not a result row")


def test_a_table_is_refused_with_the_format_to_use(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("PATH   LABEL  CONF  REVIEW\na.jpg  Pre    0.500  low\n")
    results = ResultsFile(path)
    results.refresh()
    assert results.latest == {}
    assert "--format json or csv" in results.problems[0]


def test_records_split_only_at_line_ends_outside_quotes():
    assert split_records(b'a\n"b\nc"\nd', quoted=True) == ([b"a", b'"b\nc"'], 8)
    assert split_records(b'a\r\n"b', quoted=False) == ([b"a"], 3)
