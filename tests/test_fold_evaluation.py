"""The cross-validation's evaluation (export/fold_evaluation.py, fold_summary.py,
ensemble_folds.py) and its commands (`leukedge crossval-eval`, `crossval-ensemble`), end to end
on a tiny synthetic dataset with the svm-128 recipe (no TensorFlow)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_builders import synthetic_dataset
from leukedge.cli.main import app

pytest.importorskip("sklearn")
pytest.importorskip("onnx")
runner = CliRunner()


@pytest.fixture(scope="module")
def crossval(tmp_path_factory):
    """Two svm-128 folds trained on ``DATA/<class>`` (14 images a class)."""
    from leukedge.train.crossval import run_crossval

    root = tmp_path_factory.mktemp("cv")
    data = synthetic_dataset(root / "data", per_class=14)
    return data, run_crossval(data, "svm-128", root / "cv", folds=2, seed=1)


@pytest.fixture(scope="module")
def evaluated(crossval):
    """The folds evaluated by the command, from the plain ``DATA/<class>`` layout."""
    data, cv = crossval
    result = runner.invoke(app, ["crossval-eval", str(cv), "--data", str(data)])
    assert result.exit_code == 0, result.output
    return cv, result.output


def test_every_fold_gets_its_evaluation_and_the_summary_its_calibration(evaluated):
    from leukedge.export.cv_calibration import read_cv_calibration

    cv, output = evaluated
    for k in (0, 1):
        e = json.loads((cv / f"fold{k}" / "eval.json").read_text())
        assert e["fold"] == k and e["recipe"] == "svm-128"
        assert set(e["rows"]) == {"fp32", "fp32_jitter", "fp32_tta", "fp32_tta4"}
        assert e["size_bytes"]["int8"] is None and e["int8_agreement"] is None
        assert e["parity_max_abs_diff"] < 1e-4
        assert np.allclose(np.sum(e["probs"]["fp32"], axis=1), 1, atol=1e-4)
        assert len(e["labels"]) == len(e["paths"]) == e["n"] == e["rows"]["fp32"]["n"]
        assert "black" in e["input_checks"]["not_smears"]
    summary = json.loads((cv / "summary.json").read_text())
    assert summary["folds"] == 2 and summary["n"] == 56
    assert summary["int8_minus_fp32_pp"] is None and set(summary["confusion_matrix"]) == {"fp32"}
    assert "ONNX FP32" in (cv / "summary.md").read_text() and "ONNX FP32" in output
    cal = read_cv_calibration(cv / "calibration.json")
    assert cal.temperature == summary["pooled_oof"]["temperature"] and cal.int8 == {}
    assert set(cal.metrics) == {"fp32"} and cal.metrics["fp32"]["n"] == 56


def test_a_rerun_keeps_the_evaluated_folds(evaluated, crossval):
    from leukedge.export.fold_evaluation import evaluate_crossval

    cv, _ = evaluated
    before = (cv / "fold0" / "eval.json").read_bytes()

    def never(folder):
        raise AssertionError(f"{folder} was loaded again")

    result = evaluate_crossval(cv, crossval[0], never)
    assert result.evaluated == () and (cv / "fold0" / "eval.json").read_bytes() == before


def test_the_all_layout_gives_the_same_images(crossval, tmp_path):
    from leukedge.export.fold_evaluation import fold_images

    data, cv = crossval
    shutil.copytree(data, tmp_path / "ALL" / "Original")
    oof = json.loads((cv / "fold0" / "oof.json").read_text())
    plain, nested = fold_images(oof, data), fold_images(oof, tmp_path / "ALL")
    assert plain.paths == nested.paths and len(plain.train_files) == len(nested.train_files) > 0
    assert all(np.array_equal(a, b) for a, b in zip(plain.pixels, nested.pixels))
    assert set(plain.paths).isdisjoint(p.relative_to(data).as_posix() for p in plain.train_files)


def test_other_data_is_refused_naming_the_flag(crossval, tmp_path):
    from leukedge.export.fold_evaluation import fold_images

    oof = json.loads((crossval[1] / "fold0" / "oof.json").read_text())
    other = synthetic_dataset(tmp_path / "other", per_class=3, seed=5)
    for f in other.rglob("*.jpg"):  # other names than the folds' images
        f.rename(f.with_name("x" + f.name))
    with pytest.raises(ValueError, match="--data .*held-out images are not there"):
        fold_images(oof, other)
    with pytest.raises(ValueError, match="--data .*does not exist"):
        fold_images(oof, tmp_path / "nowhere")


def test_the_ensemble_of_two_evaluated_runs(evaluated, tmp_path):
    from leukedge.export.cv_calibration import read_cv_calibration

    cv, _ = evaluated
    twin = tmp_path / "twin"
    shutil.copytree(cv, twin)
    out = tmp_path / "ensemble-calibration.json"
    result = runner.invoke(app, ["crossval-ensemble", str(cv), str(twin), "--out", str(out),
                                 "--weights", "2,1", "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "e.json").read_text())
    own = json.loads((cv / "summary.json").read_text())
    assert scored["weights"] == pytest.approx([2 / 3, 1 / 3]) and scored["folds"] == [0, 1]
    # two copies of one model at its own temperature: the mean is that model
    assert scored["rows"]["fp32"]["accuracy"]["mean"] == pytest.approx(
        own["rows"]["fp32"]["accuracy"]["mean"])
    cal = read_cv_calibration(out)
    assert cal.temperature == 1.0 and set(cal.metrics) == {"fp32", "int8"}


@pytest.mark.parametrize("args, flag", [
    (["crossval-eval", "{cv}", "--data", "{missing}"], "--data"),
    (["crossval-eval", "{missing}", "--data", "{data}"], "CV_DIR"),
    (["crossval-eval", "{cv}"], "--data"),
    (["crossval-ensemble", "{cv}", "{cv}", "--out", "{out}", "--weights", "1,x"], "--weights"),
    (["crossval-ensemble", "{cv}", "{cv}", "--out", "{out}", "--weights", "1,1,1"], "--weights"),
    (["crossval-ensemble", "{cv}", "--out", "{out}"], "CV_DIR"),
    (["crossval-ensemble", "{cv}", "{missing}", "--out", "{out}"], "CV_DIR"),
    (["crossval-ensemble", "{data}", "{data}", "--out", "{out}"], "CV_DIR"),
    (["crossval-ensemble", "{cv}", "{cv}"], "--out"),
])
def test_usage_errors_exit_2_naming_the_flag(args, flag, evaluated, crossval, tmp_path):
    names = {"cv": evaluated[0], "data": crossval[0], "missing": tmp_path / "nowhere",
             "out": tmp_path / "c.json"}
    result = runner.invoke(app, [a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    assert flag in result.output
    assert not (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_a_keras_fold_is_quantized_full_range_and_for_avx2(tmp_path):
    pytest.importorskip("tensorflow")
    from leukedge.export.cv_calibration import read_cv_calibration
    from leukedge.export.fold_evaluation import evaluate_crossval
    from leukedge.train.crossval import load_fold, run_crossval

    data = synthetic_dataset(tmp_path / "data", per_class=10)
    cv = run_crossval(data, "small_cnn-128", tmp_path / "cv", folds=2, seed=1, only_folds=[0])
    result = evaluate_crossval(cv, data, load_fold)
    assert result.evaluated == (0,)
    e = json.loads((cv / "fold0" / "eval.json").read_text())
    assert {"fp32", "int8", "int8_avx2", "int8_jitter", "fp32_tta"} <= set(e["rows"])
    from leukedge.runtime.contract import read_contract

    q = read_contract(cv / "fold0" / "model-int8-avx2.onnx").quantization
    assert q["reduce_range"] is True and q["depthwise_full_range"] >= 0
    assert e["size_bytes"]["int8"] < e["size_bytes"]["fp32"] and 0 <= e["int8_agreement"] <= 1
    cal = read_cv_calibration(cv / "calibration.json")
    assert set(cal.metrics) == {"fp32", "int8"} and cal.int8["reduce_range"] is False


def test_a_summary_over_old_and_new_folds_keeps_the_rows_they_share(evaluated):
    """Folds evaluated before the AVX2 row existed (int8_rr) and after (int8_avx2), as a resumed
    run has them: the summary keeps the rows every fold has instead of failing."""
    import copy

    from leukedge.export.fold_summary import summarise

    cv, _ = evaluated
    fold = json.loads((cv / "fold0" / "eval.json").read_text())
    old, new = copy.deepcopy(fold), copy.deepcopy(fold)
    old["rows"]["int8_rr"] = fold["rows"]["fp32"]
    new["rows"]["int8_avx2"] = fold["rows"]["fp32"]
    rows = summarise([old, new])["rows"]
    assert "fp32" in rows and "int8_rr" not in rows and "int8_avx2" not in rows
