"""`leukedge validate`: a lab's own labelled folder, the scores a lab reads, the verdict against
acceptance rules (exit 0 / 1 / 2), the JSON object and the self-contained HTML report."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.modelkit.evaluation.rules import DEFAULT_RULES, check_rules, parse_rules
from leukedge.modelkit.evaluation.validation import JSON_KEYS
from leukedge.runtime.models import SAMPLES_DIR


def invoke(*args):
    return CliRunner().invoke(app, ["validate", *map(str, args)])


@pytest.fixture
def site(tmp_path):
    """The 8 bundled samples as a lab's folder, with a note and a corrupt image."""
    root = tmp_path / "site"
    shutil.copytree(SAMPLES_DIR, root)  # <class>/*.jpg and README.md
    (root / "Pre" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return root


def test_the_bundled_model_passes_on_the_samples_and_names_what_it_did_not_score(site):
    result = invoke(site, "-f", "json", "--accept", "accuracy>=0.98,flagged<=0.2")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert sorted(d) == sorted(JSON_KEYS) and d["passed"] is True
    assert d["n"] == 9 and d["scores"]["n"] == 8 and d["scores"]["accuracy"] == 1.0
    assert [u["path"] for u in d["unreadable"]] == [str(site / "Pre" / "broken.jpg")]
    assert "truncated JPEG" in d["unreadable"][0]["error"]
    assert d["outside_class_folders"] == [str(site / "README.md")]
    assert d["scores"]["flagged_rate"] == pytest.approx(1 / 9)  # the unreadable file
    default = json.loads(invoke(site, "-f", "json").stdout)  # the unreadable file fails it
    assert default["rules"] == DEFAULT_RULES.replace("0.10", "0.1").split(",")
    assert default["failed_rules"] == ["flagged<=0.1 (measured 0.1111)"]


def test_a_failing_rule_exits_1_with_the_measured_value(site):
    result = invoke(site, "--accept", "flagged<=0.05")
    assert result.exit_code == 1
    assert "FAILED: flagged<=0.05 (measured 0.1111)" in result.stdout


def test_an_unknown_class_folder_is_a_usage_error(site):
    (site / "Blasts").mkdir()
    result = invoke(site)
    assert result.exit_code == 2
    assert "does not know the class 'Blasts'; its classes are Benign, Early, Pre, Pro" \
        in result.output


@pytest.mark.parametrize("rules, words", [
    ("accuracy>0.9", "cannot read 'accuracy>0.9'"),
    ("speed>=3", "cannot read 'speed>=3'"),
    (",", "no rule given"),
])
def test_bad_rules_are_usage_errors_naming_the_flag(site, rules, words):
    result = invoke(site, "--accept", rules)
    assert result.exit_code == 2 and "--accept" in result.output and words in result.output


def test_the_html_report_is_self_contained_and_shows_the_unflagged_errors(
        site, tiny_model_path, tmp_path):
    report = tmp_path / "report.html"
    result = invoke(site, "-m", tiny_model_path, "--report", report)  # review_below 0: no flags
    assert result.exit_code == 1  # the tiny model is wrong on most smears
    text = report.read_text()
    assert "FAILED" in text and "data:image/png;base64," in text
    assert text.count("data:image/jpeg;base64,") >= 1  # thumbnails of unflagged errors
    assert "http://" not in text and "https://" not in text and "<script" not in text
    sha = json.loads(invoke(site, "-m", tiny_model_path, "-f", "json").stdout)["model"]
    assert sha["model_sha256"] in text


def test_the_report_never_replaces_an_image_or_the_model(site):
    image = site / "Pro" / sorted(p.name for p in (site / "Pro").iterdir())[0]
    result = invoke(site, "--report", image)
    assert result.exit_code == 2 and "--report" in result.output
    assert image.read_bytes()[:3] == b"\xff\xd8\xff"


def test_rules_read_and_check_every_metric():
    rules = parse_rules("accuracy>=0.98, accuracy_low>=0.9,flagged<=0.1,unflagged_errors<=0,"
                        "cost<=0.05,ece<=0.05,min_recall>=0.95")
    scores = {"n": 100, "accuracy": 0.99, "accuracy_ci95": [0.95, 1.0], "flagged_rate": 0.02,
              "unflagged_errors": 1, "cost_per_sample": 0.1, "ece": 0.01,
              "per_class": {"A": {"recall": 0.9, "support": 10},
                            "B": {"recall": 1.0, "support": 0}}}
    assert check_rules(rules, scores) == ["unflagged_errors<=0 (measured 0.01)",
                                          "cost<=0.05 (measured 0.1)",
                                          "min_recall>=0.95 (measured 0.9)"]
    assert [r.text for r in parse_rules(None)] == [r.text for r in parse_rules(DEFAULT_RULES)]
