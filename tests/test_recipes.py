"""Recipes are registry rows read by `leukedge train`, Python `train()` and cross-validation
alike: the same row gives the same model from every entry point."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dataset_builders import synthetic_dataset
from leukedge.cli.main import app
from leukedge.modelkit.backbones import get_backbone, resolve_weights
from leukedge.train.fit import RECIPE_WEIGHTS, resolve_recipe
from leukedge.train.recipes import (DEFAULT_RECIPE, RECIPES, get_recipe, recipe_for_backbone,
                                    recipe_names)


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_a_valid_config_and_settings(name):
    row = get_recipe(name)
    config, settings = row.config(), row.settings()
    assert config.backbone == row.backbone
    config.validate()
    settings.validate()
    json.dumps(row.to_dict())  # recorded in folds.json


def test_unknown_recipe_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Unknown --recipe 'lite9'\. Valid: lite0-224-s3, "):
        get_recipe("lite9")


def test_overrides_replace_single_values_and_none_keeps_the_row():
    row = get_recipe("lite0-224-s3")
    settings = row.settings(epochs=3, learning_rate=None)
    assert settings.epochs == 3 and settings.learning_rate == row.settings().learning_rate
    assert row.config(input_size=(160, 160)).input_size == (160, 160)
    assert row.config(input_size=None).input_size == (224, 224)


def test_a_backbone_without_a_recipe_gets_its_own_defaults():
    assert recipe_for_backbone("svm").name == "svm-128"
    plain = recipe_for_backbone("densenet201")
    assert plain.weights == "imagenet" and plain.config().backbone == "densenet201"
    assert recipe_for_backbone("small_cnn").weights is None
    with pytest.raises(ValueError, match="densnet"):
        recipe_for_backbone("densnet")


def test_recipe_names_are_unique():
    assert len({r.name for r in RECIPES}) == len(RECIPES)


def _cli_training_args(monkeypatch, tmp_path, *args):
    """What `leukedge train` hands to train(): (config, settings, weights)."""
    import leukedge.train.fit as fit

    seen = {}

    def fake_train(data_dir, out_dir, config, settings, weights, **kwargs):
        seen.update(config=config, settings=settings, weights=weights)
        raise ValueError("stop here")

    monkeypatch.setattr(fit, "train", fake_train)
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "r"),
                                      *args])
    assert "stop here" in result.output, result.output
    return seen["config"], seen["settings"], seen["weights"]


@pytest.mark.parametrize("cli_args, recipe", [
    ((), None),
    (("--recipe", "svm-128"), "svm-128"),
    (("--recipe", "small_cnn-128"), "small_cnn-128"),
])
def test_the_cli_and_python_train_the_same_recipe(monkeypatch, tmp_path, cli_args, recipe):
    config, settings, weights = _cli_training_args(monkeypatch, tmp_path, *cli_args)
    py_config, py_settings, py_weights = resolve_recipe(recipe, None, None, RECIPE_WEIGHTS)
    assert config == py_config
    assert settings == py_settings
    assert weights == resolve_weights(get_backbone(py_config.backbone), py_weights)
    if recipe is None:
        assert config == get_recipe(DEFAULT_RECIPE).config()


def test_cli_options_replace_the_recipe_values(monkeypatch, tmp_path):
    config, settings, _ = _cli_training_args(
        monkeypatch, tmp_path, "--recipe", "small_cnn-128", "--epochs", "2", "--zoom", "0.3",
        "--input-size", "64")
    row = get_recipe("small_cnn-128")
    assert settings.epochs == 2 and settings.learning_rate == row.settings().learning_rate
    assert settings.augment.zoom == 0.3
    assert settings.augment.rotation_deg == row.settings().augment.rotation_deg
    assert config.input_size == (64, 64)


def test_an_unknown_recipe_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--recipe", "nope"])
    assert result.exit_code == 2 and "Unknown --recipe 'nope'" in result.output


def test_crossval_checks_its_folds_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["crossval", str(tmp_path / "missing"), "--folds", "3",
                                      "--only-folds", "0,5"])
    assert result.exit_code == 2 and "--only-folds [5] out of range" in result.output


@pytest.mark.slow
def test_crossval_runs_the_recipe_row_in_every_fold(tmp_path):
    pytest.importorskip("sklearn")
    from leukedge.train.crossval import run_crossval

    data = synthetic_dataset(tmp_path / "data", per_class=14)
    out = run_crossval(data, "svm-128", tmp_path / "cv", folds=2, seed=1)
    folds = json.loads((out / "folds.json").read_text())
    assert folds["recipe"]["name"] == "svm-128" and set(folds["folds"].values()) == {0, 1}
    held = []
    for k in (0, 1):
        record = json.loads((out / f"fold{k}" / "oof.json").read_text())
        assert record["config"] == get_recipe("svm-128").config().to_dict()
        assert record["settings"]["seed"] == 1 + k
        held += record["held_out"]["paths"]
        assert {folds["folds"][p] for p in record["held_out"]["paths"]} == {k}
    assert sorted(held) == sorted(folds["folds"])  # every image held out exactly once


@pytest.mark.slow
def test_crossval_with_similar_grouping_keeps_each_group_in_one_fold(tmp_path):
    pytest.importorskip("sklearn")
    from leukedge.train.crossval import run_crossval

    data = synthetic_dataset(tmp_path / "data", per_class=14)
    out = run_crossval(data, "svm-128", tmp_path / "cv", folds=2, seed=1, only_folds=[],
                       grouping="similar")
    assert out.name == "svm-128-similar"
    folds = json.loads((out / "folds.json").read_text())
    assert "similar fields" in folds["grouping"]
    with pytest.raises(ValueError, match="Unknown --grouping 'slides'"):
        run_crossval(data, "svm-128", tmp_path / "cv", grouping="slides")
