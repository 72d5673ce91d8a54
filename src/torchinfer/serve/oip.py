"""The Open Inference Protocol v2 (KServe / Triton REST) for image models: the JSON shapes.

Request: one BYTES input of shape [N] whose elements are the encoded images, base64 in JSON
(JSON strings cannot carry raw bytes); ``parameters`` may hold the request options
(``conf``, ``top_k``...). Response: ``{model_name, model_version, id, outputs}``, each output
``{name, datatype, shape, data}`` with ``data`` flattened in row-major order. Each task's
manifest declares its outputs and fills them (N images; variable-length ones padded to the
longest, their lengths given); the built-in ones:

    classify  topk_indices INT64 [N, K], topk_scores FP32 [N, K], topk_labels BYTES [N, K]
    detect    boxes FP32 [N, M, 4] (x0, y0, x1, y1 in image pixels), scores FP32 [N, M],
              class_ids INT64 [N, M] (-1 pads), labels BYTES [N, M], num_detections INT64 [N]
    segment   mask INT32 [N, H, W] (-1 pads), size INT64 [N, 2] (height, width)
    all       record BYTES [N]: the JSON record ``predict`` writes, one per image
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import TorchinferError
from ..manifests import task_manifest
from ..results import Result
from ..runner.sinks import dumps

MAX_IMAGES_PER_REQUEST = 64

INPUT_NAME = "image"


class ProtocolError(TorchinferError):
    """A request that does not follow the protocol (HTTP 400, ``{"error": ...}``)."""


def model_metadata(name: str, task: str, platform: str) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs, -1 for a variable dimension."""
    outputs = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
               for t in task_manifest(task).outputs]
    outputs.append({"name": "record", "datatype": "BYTES", "shape": [-1]})
    return {"name": name, "versions": ["1"], "platform": platform,
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": outputs}


def read_request(body: Any) -> tuple[list[bytes], dict[str, Any], list[str] | None, str | None]:
    """(images, options, requested output names or None for all, id) of an infer request."""
    if not isinstance(body, dict):
        raise ProtocolError("the request must be a JSON object with 'inputs'")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"expected one input, {INPUT_NAME!r}: BYTES of shape [N] holding "
                            "base64-encoded images")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise ProtocolError(f"input {tensor.get('name')!r} has datatype "
                            f"{tensor.get('datatype')!r}: send BYTES (encoded images)")
    data, shape = tensor.get("data"), tensor.get("shape")
    if isinstance(data, list) and data and isinstance(data[0], list):  # nested rows are allowed
        data = [x for row in data for x in (row if isinstance(row, list) else [row])]
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise ProtocolError("input data must be a list of base64 strings, one per image")
    if not isinstance(shape, list) or not shape or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) \
            or int(np.prod(shape)) != len(data):
        raise ProtocolError(f"input shape {shape} does not match its {len(data)} elements")
    if len(data) > MAX_IMAGES_PER_REQUEST:
        raise ProtocolError(f"{len(data)} images in one request: at most "
                            f"{MAX_IMAGES_PER_REQUEST}")
    images = []
    for i, text in enumerate(data):
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError(f"input element {i} is not base64") from None
    params = {**(tensor.get("parameters") or {}), **(body.get("parameters") or {})}
    for key in ("content_type", "binary_data_size"):  # protocol words, not model options
        params.pop(key, None)
    outputs = body.get("outputs")
    wanted = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
        wanted = [str(o["name"]) for o in outputs]
    request_id = body.get("id")
    return images, params, wanted, None if request_id is None else str(request_id)


def response(name: str, task: str, results: Sequence[Result], wanted: list[str] | None,
             request_id: str | None) -> dict[str, Any]:
    """The infer response for ``results`` (all succeeded)."""
    tensors = _tensors(task, results)
    tensors["record"] = ("BYTES", [len(results)], [dumps(r.to_dict()) for r in results])
    if wanted is not None:
        unknown = [w for w in wanted if w not in tensors]
        if unknown:
            raise ProtocolError(f"unknown output(s) {', '.join(unknown)}: this model has "
                                f"{', '.join(tensors)}")
    names = wanted if wanted is not None else list(tensors)
    out: dict[str, Any] = {"model_name": name, "model_version": "1",
                           "outputs": [{"name": n, "datatype": tensors[n][0],
                                        "shape": tensors[n][1], "data": tensors[n][2]}
                                       for n in names]}
    if request_id is not None:
        out["id"] = request_id
    return out


def _tensors(task: str, results: Sequence[Result]) -> dict[str, tuple[str, list[int], list[Any]]]:
    encode = task_manifest(task).encode
    return dict(encode(results)) if encode is not None else {}


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "torchinfer", "version": version, "extensions": []}
