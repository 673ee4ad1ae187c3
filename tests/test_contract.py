"""The model contract: roundtrips through an ONNX file and refuses what it cannot trust."""

from __future__ import annotations

import json

import pytest

from leukedge.runtime.contract import (CONTRACT_KEY, SCHEMA_VERSION, ContractError, ModelContract,
                                       contract_document, contract_from_metadata, read_contract)
from leukedge.runtime.input_checks import InputChecks
from leukedge.runtime.preprocessing import HsvMaskSpec, PreprocessSpec


def _contract(**changes) -> ModelContract:
    spec = PreprocessSpec(input_size=(32, 32), hsv_mask=HsvMaskSpec(h_min=0.68))
    return ModelContract(classes=("Benign", "Early", "Pre", "Pro"), preprocessing=spec,
                         backbone="tiny", review_below=0.6, **changes)


def test_json_roundtrip_keeps_every_field():
    contract = _contract(precision="int8", provenance={"data_manifest_sha256": "ab" * 32},
                         quantization={"method": "static"}, metrics={"accuracy": 0.9},
                         temperature=1.4, input_checks=InputChecks(0.03, 0.01, 3.3),
                         weights={"init": "imagenet", "sha256": "cd" * 32})
    again = ModelContract.from_json(contract.to_json())
    assert again == contract
    assert again.preprocessing.hsv_mask.h_min == 0.68
    assert contract.to_dict()["inputs"][0]["dtype"] == "uint8"


def test_file_roundtrip_through_onnxruntime(tmp_path, make_tiny_onnx):
    path = make_tiny_onnx(tmp_path / "m.onnx", review_below=0.55, backbone="tiny_cnn",
                          classes=("A", "B", "C", "D"), temperature=1.5)
    contract = read_contract(path)
    assert contract.classes == ("A", "B", "C", "D")
    assert contract.review_below == 0.55 and contract.backbone == "tiny_cnn"
    assert contract.temperature == 1.5 and contract.has_ood_score
    assert contract.preprocessing.input_size == (32, 32)


@pytest.mark.parametrize("key", ["classes", "outputs", "preprocessing", "precision"])
def test_missing_key_is_named(key):
    d = _contract().to_dict()
    del d[key]
    with pytest.raises(ContractError, match=f"m.onnx: leukedge contract is missing {key}"):
        ModelContract.from_dict(d, "m.onnx")


def test_malformed_values_are_reported():
    d = _contract().to_dict()
    del d["preprocessing"]["hsv_mask"]
    with pytest.raises(ContractError, match="malformed leukedge contract .*hsv_mask"):
        ModelContract.from_dict(d, "m.onnx")


@pytest.mark.parametrize("changes, message", [
    ({"precision": "int4"}, "precision 'int4' is not one of"),
    ({"classes": ["only"]}, "classes must be a list of >= 2 unique names"),
    ({"classes": "Benign,Early"}, "classes must be a list"),
    ({"review_below": 1.5}, r"review_below must be a number in \[0, 1\]"),
    ({"temperature": -1}, "temperature must be a number"),
    ({"input_checks": {"min_contrast": 2.0, "min_stain_coverage": 0, "max_ood_score": None}},
     "input_checks.min_contrast"),
])
def test_invalid_values_are_named(changes, message):
    d = {**_contract().to_dict(), **changes}
    with pytest.raises(ContractError, match=f"m.onnx: .*{message}"):
        ModelContract.from_dict(d, "m.onnx")


def test_nan_is_refused_when_written_and_when_read():
    with pytest.raises(ContractError, match="temperature"):
        _contract(temperature=float("nan"))
    text = _contract().to_json().replace('"temperature": 1.0', '"temperature": NaN')
    with pytest.raises(ContractError, match="temperature"):
        ModelContract.from_json(text, "m.onnx")


def test_malformed_json_in_a_file_is_refused(tmp_path, make_tiny_onnx):
    path = make_tiny_onnx(tmp_path / "bad.onnx", raw_contract='{"schema_version": 2, "classes": [')
    with pytest.raises(ContractError, match=r"bad\.onnx: leukedge contract is not valid JSON"):
        read_contract(path)


def test_json_that_is_not_an_object_is_refused():
    with pytest.raises(ContractError, match="not a JSON object"):
        contract_from_metadata({CONTRACT_KEY: "[1, 2]"}, "m.onnx")


def test_newer_schema_version_asks_for_an_upgrade(tmp_path, make_tiny_onnx):
    d = _contract().to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    path = make_tiny_onnx(tmp_path / "future.onnx", raw_contract=json.dumps(d))
    with pytest.raises(ContractError, match="upgrade leukedge"):
        read_contract(path)


def test_a_schema_1_model_is_shown_but_refused(tmp_path, make_tiny_onnx):
    old = {"schema": CONTRACT_KEY, "schema_version": 1, "classes": ["a", "b"],
           "inputs": [{"name": "image", "shape": [None, 32, 32, 3]}], "precision": "fp32"}
    path = make_tiny_onnx(tmp_path / "old.onnx", raw_contract=json.dumps(old))
    assert contract_document(path)["schema_version"] == 1
    with pytest.raises(ContractError, match="leukedge 0.1 .*preprocessed float input"):
        read_contract(path)


def test_model_without_contract_is_refused_with_a_hint(tmp_path, make_tiny_onnx):
    path = make_tiny_onnx(tmp_path / "plain.onnx", contract=False)
    with pytest.raises(ContractError, match=r"plain\.onnx: not a leukedge model.*leukedge export"):
        read_contract(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ContractError, match="model file not found"):
        read_contract(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(ContractError, match=r"junk\.onnx: ONNX Runtime cannot load this model"):
        read_contract(junk)


def test_input_check_reasons():
    limits = InputChecks(min_contrast=0.03, min_stain_coverage=0.01, max_ood_score=3.0)
    assert limits.reasons(0.1, 0.2, 1.0) == []
    reasons = limits.reasons(0.0, 0.0, 9.0)
    assert [r.message.split(" (")[0] for r in reasons] == [
        "blank or flat image", "no stained cells found", "unlike the training images"]
    assert [r.code for r in reasons] == ["blank", "no_stain", "unlike_training"]
    assert [r.code for r in limits.reasons(float("nan"), 0.2, 1.0)] == ["blank"]  # NaN fails


def test_review_codes_are_checked_and_travel_as_objects():
    from leukedge.runtime.input_checks import REVIEW_CODES, ReviewReason, low_confidence

    reason = low_confidence(0.7123, 0.95)
    assert reason.to_dict() == {"code": "low_confidence",
                                "message": "low confidence (0.712 < 0.95)"}
    assert str(reason) == reason.message
    assert set(REVIEW_CODES) == {"low_confidence", "blank", "no_stain", "unlike_training",
                                 "unreadable"}
    with pytest.raises(ValueError, match="Unknown review code 'blurry'"):
        ReviewReason("blurry", "out of focus")


def test_a_schema_2_contract_reads_its_sanity_limits_as_input_checks(tiny_model_path):
    """The bundled models before 0.3 and any model exported then carry ``sanity``."""
    d = read_contract(tiny_model_path).to_dict()
    d["schema_version"], d["sanity"] = 2, d.pop("input_checks")
    d["sanity"]["min_contrast"] = 0.05
    assert ModelContract.from_dict(d).input_checks.min_contrast == 0.05


@pytest.mark.parametrize("name, index, words", [
    ("Ea\nrly", 1, "U+000A"),
    ("\x1b[31mPre", 2, "U+001B"),
    ("Pro\u2028", 3, "U+2028"),
    ("Be/nign", 0, "cannot be a folder name"),
    ("..", 3, "cannot be a folder name"),
])
def test_class_names_that_fake_rows_or_folders_are_refused(tmp_path, make_tiny_onnx, name,
                                                          index, words):
    d = _contract().to_dict()
    d["classes"][index] = name
    path = make_tiny_onnx(tmp_path / "crafted.onnx", raw_contract=json.dumps(d))
    with pytest.raises(ContractError, match=rf"crafted\.onnx: .*class {index} name") as caught:
        read_contract(path)
    assert words in str(caught.value) and "\x1b" not in str(caught.value)
    with pytest.raises(ContractError, match=f"class {index} name"):  # and when written
        _contract().with_updates(classes=tuple(d["classes"]))


def test_infer_refuses_a_model_with_a_crafted_class_name(tmp_path, make_tiny_onnx, sample_images):
    from typer.testing import CliRunner

    from leukedge.cli.main import app

    d = _contract().to_dict()
    d["classes"][1] = "Early\nfake.jpg  Benign  1.000"
    path = make_tiny_onnx(tmp_path / "crafted.onnx", raw_contract=json.dumps(d))
    result = CliRunner().invoke(app, ["infer", str(sample_images[0]), "-m", str(path)])
    assert result.exit_code == 2 and "class 1 name" in result.stderr
    assert "fake.jpg  Benign" not in result.stdout
