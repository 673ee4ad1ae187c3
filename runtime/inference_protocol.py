"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST) on ``leukedge serve``.

The same client code then talks to ``leukedge serve`` on the microscope PC and to Triton or
KServe in a data centre (``leukedge export --triton`` writes the same model for Triton):

- ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``: server metadata and health;
- ``GET /v2/models/{name}`` (and ``/ready``): the model's inputs and outputs, ``{name}`` being
  the served model's name (``default-int8``, or the file name without ``.onnx``);
- ``POST /v2/models/{name}/infer``: the model's own uint8 input ``image`` [N, H, W, 3] as a
  JSON tensor or with the binary tensor extension (``Inference-Header-Content-Length``), and
  the outputs asked for (all but ``stain_mask`` by default), as JSON or binary.

These are the model's raw outputs (calibrated probabilities, input-check measures): the review
rule (threshold, input-check limits) is in the contract, which ``GET /v1/model`` returns.
Errors are ``{"error": message}``, as everywhere in ``serve``.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations
# (``request: Request``) at definition time, inside add_routes where Request is imported.
import json
from typing import Any, Optional

import numpy as np

from .contract import INPUT_NAME, leukedge_version

HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32",
             np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64"}


class ProtocolError(ValueError):
    """A request this protocol cannot answer; ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def served_name(classifier) -> str:
    return str(classifier.provenance["model"]).removesuffix(".onnx")


def server_metadata() -> dict:
    return {"name": "leukedge", "version": leukedge_version(),
            "extensions": ["binary_tensor_data"]}


def model_metadata(classifier) -> dict:
    """Inputs and outputs in the protocol's terms (-1: any size)."""
    k = len(classifier.classes)
    shapes = {"probs": [-1, k], "stain_mask": [-1, -1, -1], "heatmap": [-1, -1, -1]}
    return {"name": served_name(classifier), "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            "outputs": [{"name": o, "datatype": "UINT8" if o == "stain_mask" else "FP32",
                         "shape": shapes.get(o, [-1])} for o in classifier.contract.outputs]}


def split_body(body: bytes, header_length: Optional[str]) -> tuple[dict, bytes]:
    """(the JSON request, the binary tensor bytes after it)."""
    try:
        n = int(header_length) if header_length is not None else len(body)
        if not 0 < n <= len(body):
            raise ValueError
        request = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("the request is not an inference request (a JSON object, with "
                            f"{HEADER_LENGTH} when binary tensors follow it)") from None
    if not isinstance(request, dict):
        raise ProtocolError("the inference request must be a JSON object")
    return request, body[n:]


def input_pixels(request: dict, binary: bytes, max_pixels: int) -> np.ndarray:
    """The ``image`` tensor of a request: uint8 [N, H, W, 3], checked before it is built."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"send exactly one input, {INPUT_NAME!r}")
    spec = inputs[0]
    if spec.get("name") != INPUT_NAME or spec.get("datatype") != "UINT8":
        raise ProtocolError(f"the input must be {INPUT_NAME!r} with datatype UINT8 (raw RGB "
                            f"pixels), got {spec.get('name')!r} {spec.get('datatype')!r}")
    shape = spec.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or shape[3] != 3
            or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise ProtocolError(f"shape must be [N, H, W, 3], got {shape!r}")
    n, h, w, _ = shape
    if h * w > max_pixels:
        raise ProtocolError(f"images of {w} x {h} pixels are over the limit of "
                            f"{max_pixels / 1e6:.0f} MP", 413)
    size = n * h * w * 3
    parameters = spec.get("parameters") or {}
    if "binary_data_size" in parameters:
        if parameters["binary_data_size"] != size or len(binary) != size:
            raise ProtocolError(f"binary data: {len(binary)} bytes for a [{n}, {h}, {w}, 3] "
                                f"tensor of {size}")
        return np.frombuffer(binary, np.uint8).reshape(shape)
    try:
        pixels = np.asarray(spec.get("data"), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ProtocolError("data must be a list of integers 0-255") from None
    if pixels.size != size or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise ProtocolError(f"data must hold {size} integers 0-255 for shape {shape}")
    return pixels.astype(np.uint8).reshape(shape)


def wanted_outputs(request: dict, available: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(output name, as binary) pairs the request asks for; all but the mask by default."""
    asked = request.get("outputs")
    if not asked:
        binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
        return [(o, binary) for o in available if o != "stain_mask"]
    out = []
    for item in asked:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in available:
            raise ProtocolError(f"unknown output {name!r}; this model has {', '.join(available)}")
        out.append((name, bool((item.get("parameters") or {}).get("binary_data", False))))
    return out


def response_body(model: str, request: dict, outputs: dict[str, np.ndarray],
                  wanted: list[tuple[str, bool]]) -> tuple[bytes, dict[str, str]]:
    """The response bytes and headers (binary outputs after the JSON, as the request asked)."""
    entries, blobs = [], []
    for name, binary in wanted:
        value = np.ascontiguousarray(outputs[name])
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        entry: dict[str, Any] = {"name": name, "datatype": DATATYPES[value.dtype],
                                 "shape": list(value.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": value.nbytes}
            blobs.append(value.tobytes())
        else:
            entry["data"] = value.reshape(-1).tolist()
        entries.append(entry)
    head = {"model_name": model, "model_version": "1", "outputs": entries}
    if "id" in request:
        head["id"] = request["id"]
    text = json.dumps(head).encode()
    if not blobs:
        return text, {"content-type": "application/json"}
    return text + b"".join(blobs), {"content-type": "application/octet-stream",
                                    HEADER_LENGTH: str(len(text))}


def add_routes(app: Any, classifier, budget, max_pixels: int) -> None:
    """Register the protocol's routes on the FastAPI ``app`` of :mod:`.http_api`."""
    import asyncio

    from fastapi import Request
    from fastapi.responses import JSONResponse, Response

    name = served_name(classifier)

    def unknown(model: str) -> Optional[JSONResponse]:
        if model == name:
            return None
        return JSONResponse({"error": f"no model {model!r}; this server serves {name!r}"},
                            status_code=404)

    @app.get("/v2")
    async def v2_server() -> dict:
        return server_metadata()

    @app.get("/v2/health/live")
    async def v2_live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready() -> dict:
        return {"ready": True}

    @app.get("/v2/models/{model}")
    async def v2_model(model: str):
        return unknown(model) or model_metadata(classifier)

    @app.get("/v2/models/{model}/ready")
    async def v2_model_ready(model: str):
        return unknown(model) or {"name": name, "ready": True}

    @app.post("/v2/models/{model}/infer")
    async def v2_infer(model: str, request: Request):
        refused = unknown(model)
        if refused is not None:
            return refused
        try:
            body, binary = split_body(await request.body(),
                                      request.headers.get(HEADER_LENGTH))
            pixels = input_pixels(body, binary, max_pixels)
            wanted = wanted_outputs(body, classifier.contract.outputs)
        except ProtocolError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        held = int(np.prod(pixels.shape[:3]))
        await budget.acquire(held)
        try:
            outputs = await asyncio.to_thread(classifier.run, pixels, [o for o, _ in wanted])
        finally:
            await budget.release(held)
        content, headers = response_body(name, body, outputs, wanted)
        media = headers.pop("content-type")
        return Response(content, media_type=media, headers=headers)
