"""Quantization (static / dynamic / fp16) of tiny ONNX models: the child runs, carries the
extended contract, and the accuracy gate refuses a model that quantization breaks, writing nothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_builders import synthetic_dataset
from leukedge.cli.main import app
from leukedge.export import (AccuracyGateError, ImageCalibrationReader, QuantizationError,
                             QuantizeOptions, calibration_files, calibration_set_sha256,
                             quantize_model)
from leukedge.modelkit.evaluation.labelled import load_labelled, select_evenly
from leukedge.modelkit.graph.compose import compose_model, output_names
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.contract import ModelContract, embed_contract, read_contract, save_model
from leukedge.runtime.files import sha256_file
from leukedge.runtime.preprocessing import PreprocessSpec

CLASSES = ("Benign", "Early", "Pre", "Pro")
BROKEN_SIZE = 16
COLOURS = ((200, 60, 60), (60, 200, 60), (60, 60, 200), (40, 40, 40))  # -> class 0, 1, 2, 3


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory.mktemp("calib"), per_class=5)


def test_calibration_reader_is_deterministic(calib_dir):
    files = calibration_files(calib_dir, 8)
    assert len(files) == 8 and files == sorted(files)
    assert files == calibration_files(calib_dir, 8)
    assert {f.parent.name for f in files} == set(CLASSES)  # spread over every class folder
    reader = ImageCalibrationReader(list(reversed(files)))
    first = [reader.get_next() for _ in range(len(reader))]
    assert reader.get_next() is None
    reader.rewind()
    again = list(reader)
    assert len(again) == 8 and all(a["image"].shape == (1, 48, 48, 3) for a in again)
    assert all(a["image"].dtype == np.uint8 for a in again)  # raw pixels: the model prepares them
    np.testing.assert_array_equal(first[3]["image"], again[3]["image"])
    assert calibration_set_sha256(files) == calibration_set_sha256(list(reversed(files)))
    assert select_evenly([Path("b"), Path("a"), Path("c")], 2) == [Path("a"), Path("c")]


@pytest.mark.parametrize("method,precision", [("static", "int8"), ("dynamic", "int8"),
                                              ("fp16", "fp16")])
def test_quantized_child_runs_and_extends_the_contract(method, precision, tiny_model_path,
                                                       calib_dir, tmp_path):
    files = tuple(calibration_files(calib_dir, 12))
    out = tmp_path / f"tiny-{method}.onnx"
    result = quantize_model(tiny_model_path, out, QuantizeOptions(method, files))
    contract = read_contract(out)
    assert contract.precision == precision and result.contract.precision == precision
    assert contract.provenance["parent_sha256"] == sha256_file(tiny_model_path)
    q = contract.quantization
    assert q["method"] == method and q["excluded_nodes"] == [] and q["checks_passed"] is True
    assert q["per_channel"] is (None if method == "fp16" else True)
    if method == "static":
        assert q["calib_size"] == 12 and q["calib_method"] == "minmax"
        assert q["calibration_set_sha256"] == calibration_set_sha256(files)
        from leukedge.runtime.cpu import has_int8_vnni

        # the default: full range where this CPU has VNNI, 7-bit weights where it has not
        assert q["reduce_range"] is (has_int8_vnni() is False) and q["weight_type"] == "int8"
    assert contract.classes == CLASSES and contract.outputs == read_contract(tiny_model_path).outputs
    assert result.agreement.n_images == 12 and result.agreement.source == "calibration images"
    clf = Classifier(out, provider="cpu")  # the input stays uint8 pixels
    assert clf.predict(files[0]).label in CLASSES
    import onnx

    quantized = [n.name for n in onnx.load(str(out)).graph.node
                 if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear")]
    assert not [n for n in quantized if n.startswith(("pre/", "post/"))]  # only the network


def test_uint8_weights_are_recorded_in_the_contract(tiny_model_path, calib_dir, tmp_path):
    files = tuple(calibration_files(calib_dir, 8))
    out = tmp_path / "tiny-u8.onnx"
    quantize_model(tiny_model_path, out, QuantizeOptions("static", files, weight_type="uint8",
                                                         reduce_range=False))
    q = read_contract(out).quantization
    assert q["weight_type"] == "uint8" and q["reduce_range"] is False
    assert Classifier(out, provider="cpu").predict(files[0]).label in CLASSES


def test_quantize_checks_its_arguments(tiny_model_path, make_tiny_onnx, calib_dir, tmp_path):
    files = tuple(calibration_files(calib_dir, 4))
    with pytest.raises(ValueError, match="Unknown --weight-type 'int4'. Valid: int8, uint8"):
        quantize_model(tiny_model_path, tmp_path / "x.onnx",
                       QuantizeOptions("static", files, weight_type="int4"))
    with pytest.raises(ValueError, match="--method static needs calibration images"):
        quantize_model(tiny_model_path, tmp_path / "x.onnx", QuantizeOptions("static"))
    with pytest.raises(ValueError, match="Unknown --method 'int4'. Valid: static, dynamic, fp16"):
        quantize_model(tiny_model_path, tmp_path / "x.onnx", QuantizeOptions("int4"))
    with pytest.raises(ValueError, match=r"--exclude-nodes: \['nope'\] are not nodes"):
        quantize_model(tiny_model_path, tmp_path / "x.onnx",
                       QuantizeOptions("static", files, exclude_nodes=("nope",)))
    half = make_tiny_onnx(tmp_path / "half.onnx", precision="fp16")
    with pytest.raises(QuantizationError, match="already fp16"):
        quantize_model(half, tmp_path / "x.onnx", QuantizeOptions("dynamic"))
    assert not (tmp_path / "x.onnx").exists()


def _one_file_model(path: Path, nodes: list, inits: list, size: int, n_features: int) -> Path:
    """A network graph (``image`` float NHWC in; ``logits`` [N, 4] and ``features`` out) behind
    the preprocessing graph, with a contract, written to ``path``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_features])],
        inits)
    net = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    net.ir_version = 9
    spec = PreprocessSpec(input_size=(size, size))
    model = compose_model(net, spec)
    embed_contract(model, ModelContract(classes=CLASSES, preprocessing=spec,
                                        outputs=output_names(False), review_below=0.0))
    save_model(model, path)
    return path


# ------------------------------------------------------- 7-bit weights, 8-bit depthwise


def _convnet_model(path: Path, size: int = 16) -> Path:
    """A one-file model whose network has a pointwise, a depthwise and a grouped (not
    depthwise) convolution and a dense layer, with seeded random weights."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = {"pw": rng.normal(0, 0.5, (8, 3, 1, 1)), "dw": rng.normal(0, 0.5, (8, 1, 3, 3)),
               "gc": rng.normal(0, 0.5, (8, 4, 3, 3)), "W": rng.normal(0, 0.5, (8, 4)),
               "axes": np.array([2, 3])}
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "pw"], ["c1"], name="pointwise"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "dw"], ["c2"], group=8, pads=[1] * 4,
                              name="depthwise"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "gc"], ["c3"], group=2, pads=[1] * 4,
                              name="grouped"),
             helper.make_node("ReduceMean", ["c3", "axes"], ["features"], keepdims=0),
             helper.make_node("MatMul", ["features", "W"], ["logits"], name="dense")]
    inits = [numpy_helper.from_array(v.astype(np.int64 if k == "axes" else np.float32), k)
             for k, v in weights.items()]
    return _one_file_model(path, nodes, inits, size, n_features=8)


def _weight_ranges(path: Path) -> dict[str, int]:
    """Largest |quantized weight| of each convolution / dense weight in a QDQ file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    out = {}
    for node in graph.node:
        source = node.input[0]
        if node.op_type == "DequantizeLinear" and source in stored and \
                stored[source].dtype == np.int8:
            out[source.split("_quantized")[0]] = int(np.abs(stored[source].astype(int)).max())
    return out


def test_depthwise_weights_keep_8_bits_while_matrix_products_get_7(calib_dir, tmp_path):
    """--reduce-range --depthwise-8bit: only the depthwise convolution's weights use the whole
    int8 range; the pointwise, grouped and dense weights stay within 7 bits (what AVX2's
    paired 16-bit sums need), and the child still classifies."""
    from leukedge.export.quant_backends import _depthwise_weights

    model = _convnet_model(tmp_path / "convnet.onnx")
    import onnx

    assert _depthwise_weights(onnx.load(str(model))) == ["net/dw"]
    files = tuple(calibration_files(calib_dir, 8))
    ranges = {}
    for name, dw8 in (("all7", False), ("dw8", True)):
        out = tmp_path / f"{name}.onnx"
        quantize_model(model, out, QuantizeOptions("static", files, reduce_range=True,
                                                   depthwise_full_range=dw8), force=True)
        ranges[name] = _weight_ranges(out)
        assert Classifier(out, provider="cpu").predict(files[0]).label in CLASSES
    assert set(ranges["dw8"]) == {"net/pw", "net/dw", "net/gc", "net/W"}
    assert all(v <= 64 for v in ranges["all7"].values())
    assert ranges["dw8"]["net/dw"] == 127
    assert all(ranges["dw8"][k] <= 64 for k in ("net/pw", "net/gc", "net/W"))
    assert read_contract(tmp_path / "dw8.onnx").quantization["depthwise_full_range"] == 1
    with pytest.raises(ValueError, match="--depthwise-8bit applies to --method static with "
                                         "--reduce-range"):
        quantize_model(model, tmp_path / "x.onnx", QuantizeOptions(
            "static", files, reduce_range=False, depthwise_full_range=True))


# ----------------------------------------------------------------------------- the gate


def _broken_model(path: Path) -> Path:
    """A 4-class one-file model whose fifth logit is a constant 1000, sliced off before the
    softmax.

    In FP32 the 4 small logits decide; INT8 gives that MatMul+Add output one per-tensor scale of
    ~4, which rounds the informative logits to the same value: quantization destroys the model.
    """
    from onnx import helper, numpy_helper

    weights = np.zeros((3, 5), np.float32)
    weights[0, 0] = weights[1, 1] = weights[2, 2] = 4.0
    bias = np.array([0, 0, 0, 1.5, 1000], np.float32)
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["features"], keepdims=0,
                              name="image_mean"),
             helper.make_node("MatMul", ["features", "W"], ["mm"], name="dense"),
             helper.make_node("Add", ["mm", "B"], ["logits5"], name="bias_with_outlier"),
             helper.make_node("Slice", ["logits5", "s", "e", "a"], ["logits"], name="drop_outlier")]
    inits = [numpy_helper.from_array(v, k) for k, v in
             {"W": weights, "B": bias, "s": np.array([0]), "e": np.array([4]),
              "a": np.array([1]), "axes": np.array([1, 2])}.items()]
    return _one_file_model(path, nodes, inits, BROKEN_SIZE, n_features=3)


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> tuple[Path, Path]:
    """(broken model, labelled folder that the FP32 model classifies perfectly)."""
    root = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(0)
    for i in range(40):
        k = i % 4
        image = np.clip(np.array(COLOURS[k]) + rng.integers(-20, 20, (BROKEN_SIZE, BROKEN_SIZE, 3)),
                        0, 255).astype(np.uint8)
        (root / "data" / CLASSES[k]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "data" / CLASSES[k] / f"{i:03d}.png"), image[:, :, ::-1])
    return _broken_model(root / "broken.onnx"), root / "data"


def test_gate_refuses_a_model_quantization_destroys(broken, tmp_path):
    model, data = broken
    labelled = load_labelled(data, CLASSES)
    options = QuantizeOptions("static", tuple(calibration_files(data, 20)))
    out = tmp_path / "broken-int8.onnx"
    with pytest.raises(AccuracyGateError, match=r"accuracy drops .* more than --max-drop 1 pp") as err:
        quantize_model(model, out, options, gate_data=labelled)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert err.value.gate.reference["accuracy"] == 1.0
    worst = err.value.offenders[0]
    assert worst.tensor == "net/logits5" and worst.worst_channel_sqnr_db < 10 < worst.local_sqnr_db
    assert "--exclude-nodes" in str(err.value)
    # the suggestion works: keeping the culprit in float passes the gate
    keep = tuple(err.value.suggested_exclude)
    assert str(err.value).endswith("--exclude-nodes " + ",".join(keep))
    result = quantize_model(model, out, QuantizeOptions("static", options.calib_paths,
                                                        exclude_nodes=keep), gate_data=labelled)
    assert result.gate.passed and read_contract(out).quantization["excluded_nodes"] == list(keep)
    child = read_contract(out)
    assert child.quantization["gate"]["candidate"]["accuracy"] == 1.0
    assert child.metrics["accuracy"] == 1.0  # no cross-validated figures: the gate's
    assert child.provenance["metrics_source"].startswith("accuracy gate")


def test_force_writes_a_failed_child_marked_as_failed(broken, tmp_path):
    model, data = broken
    options = QuantizeOptions("static", tuple(calibration_files(data, 20)))
    out = tmp_path / "forced.onnx"
    result = quantize_model(model, out, options, gate_data=load_labelled(data, CLASSES),
                            force=True)
    assert not result.passed and out.is_file()
    q = read_contract(out).quantization
    assert q["checks_passed"] is False and "accuracy gate" in q["failure"]


def test_cli_gate_failure_exits_1_and_names_nodes(broken, tmp_path):
    model, data = broken
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(app, ["quantize", str(model), "--calib", str(data), "--data",
                                      str(data), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "refused by the accuracy gate" in result.output
    assert "Per-activation sensitivity" in result.output and not out.exists()
    forced = CliRunner().invoke(app, ["quantize", str(model), "--calib", str(data), "--data",
                                      str(data), "--out", str(out), "--force"])
    assert forced.exit_code == 1 and out.is_file() and "--force" in forced.output


def test_cli_quantize_fp16_and_errors(tiny_model_path, calib_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "t16.onnx"
    ok = runner.invoke(app, ["quantize", str(tiny_model_path), "--method", "fp16", "--out", str(out),
                             "--calib", str(calib_dir)])
    assert ok.exit_code == 0, ok.output
    assert "fp16" in ok.output and read_contract(out).precision == "fp16"
    before = out.read_bytes()
    again = runner.invoke(app, ["quantize", str(tiny_model_path), "--method", "fp16", "--out",
                                str(out), "--calib", str(calib_dir)])
    assert again.exit_code == 2 and "--overwrite" in again.output and out.read_bytes() == before
    replaced = runner.invoke(app, ["quantize", str(tiny_model_path), "--method", "fp16", "--out",
                                   str(out), "--calib", str(calib_dir), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    no_calib = runner.invoke(app, ["quantize", str(tiny_model_path), "--out", str(tmp_path / "s.onnx")])
    assert no_calib.exit_code == 2 and "needs calibration images" in no_calib.output
    unchecked = runner.invoke(app, ["quantize", str(tiny_model_path), "--method", "fp16",
                                    "--out", str(tmp_path / "u.onnx")])
    assert unchecked.exit_code == 2 and "needs real images" in unchecked.output
    lone = runner.invoke(app, ["quantize", str(tiny_model_path), "--calib", str(calib_dir),
                               "--no-reduce-range", "--depthwise-8bit",
                               "--out", str(tmp_path / "d.onnx")])
    assert lone.exit_code == 2 and "--depthwise-8bit applies to" in lone.output
    assert not (tmp_path / "d.onnx").exists()
    helptext = runner.invoke(app, ["quantize", "--help"])
    assert "--reduce-range" in helptext.output and "--depthwise-8bit" in helptext.output


def test_child_takes_cross_validated_metrics_only_for_the_setting_measured(tiny_model_path):
    from leukedge.export.lineage import cross_validated_metrics

    measured = {"accuracy": 0.99, "accuracy_sd": 0.004, "n": 2604}
    parent = read_contract(tiny_model_path).with_updates(provenance={
        "metrics_by_precision": {"fp32": {"accuracy": 0.991}, "int8": measured},
        "cv_int8_setting": {"method": "static", "per_channel": True, "reduce_range": False}})
    files = (Path("a.jpg"),)
    from leukedge.runtime.cpu import has_int8_vnni

    auto = QuantizeOptions("static", files)  # full range on this CPU only if it has VNNI
    assert auto.reduce_range is (has_int8_vnni() is False)
    assert cross_validated_metrics(
        parent, QuantizeOptions("static", files, reduce_range=True)) is None
    assert cross_validated_metrics(
        parent, QuantizeOptions("static", files, reduce_range=False)) == measured
    assert cross_validated_metrics(parent, QuantizeOptions("fp16", files)) is None
    assert cross_validated_metrics(read_contract(tiny_model_path),
                                   QuantizeOptions("static", files)) is None


def test_reduce_range_follows_this_cpu_unless_given(monkeypatch):
    from leukedge.runtime import cpu

    monkeypatch.setattr(cpu, "has_int8_vnni", lambda: False)
    assert QuantizeOptions("static").reduce_range is True
    assert QuantizeOptions("static", reduce_range=False).reduce_range is False
    monkeypatch.setattr(cpu, "has_int8_vnni", lambda: True)
    assert QuantizeOptions("static").reduce_range is False
    monkeypatch.setattr(cpu, "has_int8_vnni", lambda: None)  # not x86: no u8s8 kernels
    assert QuantizeOptions("static").reduce_range is False


def test_gate_refusal_names_the_saturating_cpu_and_the_flag() -> None:
    """When the same quantized graph passes with the integer kernels off, the refusal blames this
    CPU's INT8 kernels, names its INT8 acceleration and the flag that avoids the saturation."""
    from types import SimpleNamespace

    from leukedge.export.gate import GateResult
    from leukedge.export.quantize import _gate_error
    from leukedge.modelkit.evaluation.machine import describe_machine

    reference = {"accuracy": 0.99, "cost_per_sample": 0.05}
    failed = GateResult(reference, {"accuracy": 0.60, "cost_per_sample": 0.9}, 1.0, 0.05, "val")
    emulated = GateResult(reference, {"accuracy": 0.985, "cost_per_sample": 0.06}, 1.0, 0.05, "val")
    assert not failed.passed and emulated.passed
    child = SimpleNamespace(options=QuantizeOptions("dynamic", reduce_range=False))
    message = str(_gate_error(failed, emulated, child, []))
    assert "Nothing was written" in message and "98.50%" in message
    assert describe_machine()["int8_acceleration"] in message
    assert message.endswith("Quantize with --reduce-range --depthwise-8bit (7-bit weights "
                            "where the kernels sum pairs in 16 bits).")
    child = SimpleNamespace(options=QuantizeOptions("dynamic", reduce_range=True))
    assert str(_gate_error(failed, emulated, child, [])).endswith(
        "Try --no-per-channel or --method fp16.")
