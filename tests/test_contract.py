"""The model contract: roundtrips through an ONNX file and refuses what it cannot trust."""

from __future__ import annotations

import json

import pytest

from leukedge.runtime.contract import (CONTRACT_KEY, SCHEMA_VERSION, ContractError, ModelContract,
                                       contract_from_metadata, read_contract)
from leukedge.runtime.preprocess import HsvMaskSpec, PreprocessSpec


def _contract(**changes) -> ModelContract:
    spec = PreprocessSpec(input_size=(32, 32), hsv_mask=HsvMaskSpec(h_min=0.68))
    return ModelContract.for_hybrid(spec, backbone="tiny", review_below=0.6, **changes)


def test_json_roundtrip_keeps_every_field():
    contract = _contract(precision="int8", provenance={"data_manifest_sha256": "ab" * 32},
                         quantization={"method": "static_qdq"}, metrics={"accuracy": 0.9})
    again = ModelContract.from_json(contract.to_json())
    assert again == contract
    assert again.preprocessing.hsv_mask.h_min == 0.68
    assert again.input_for("masked_image").name == "masked_image"


def test_file_roundtrip_through_onnxruntime(tmp_path, make_tiny_onnx):
    path = make_tiny_onnx(tmp_path / "m.onnx", review_below=0.55, backbone="tiny_cnn",
                          classes=("A", "B", "C", "D"))
    contract = read_contract(path)
    assert contract.classes == ("A", "B", "C", "D")
    assert contract.review_below == 0.55 and contract.backbone == "tiny_cnn"
    assert contract.preprocessing.input_size == (32, 32)
    assert [i.name for i in contract.inputs] == ["image", "masked_image"]


def test_single_input_contract_has_no_masked_input(tmp_path, make_tiny_onnx):
    contract = read_contract(make_tiny_onnx(tmp_path / "single.onnx", single_input=True))
    assert contract.input_for("masked_image") is None
    assert contract.input_for("image").name == "image"


@pytest.mark.parametrize("key", ["classes", "inputs", "output", "preprocessing", "precision",
                                 "schema_version"])
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


def test_invalid_values_are_listed():
    d = _contract().to_dict()
    d["precision"], d["classes"] = "int4", ["only"]
    with pytest.raises(ContractError, match="m.onnx: Invalid .*classes must be .*precision 'int4' is not one of"):
        ModelContract.from_dict(d, "m.onnx")


def test_malformed_json_in_a_file_is_refused(tmp_path, make_tiny_onnx):
    path = make_tiny_onnx(tmp_path / "bad.onnx", raw_contract='{"schema_version": 1, "classes": [')
    with pytest.raises(ContractError, match=r"bad\.onnx: leukedge contract is not valid JSON"):
        read_contract(path)


def test_json_that_is_not_an_object_is_refused():
    with pytest.raises(ContractError, match="not a JSON object"):
        contract_from_metadata({CONTRACT_KEY: "[1, 2]"}, "m.onnx")


def test_newer_schema_version_asks_for_an_upgrade(tmp_path, make_tiny_onnx):
    d = _contract().to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    path = make_tiny_onnx(tmp_path / "future.onnx", raw_contract=json.dumps(d))
    with pytest.raises(ContractError, match=f"schema_version {SCHEMA_VERSION + 1} is newer .*upgrade"):
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
    with pytest.raises(ContractError, match=r"junk\.onnx: not a valid ONNX model"):
        read_contract(junk)
