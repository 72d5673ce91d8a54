"""The Open Inference Protocol v2 (KServe / Triton REST) for image models: the JSON shapes.

Request: one BYTES input of shape [N] whose elements are the encoded images, base64 in JSON
(JSON strings cannot carry raw bytes); ``parameters`` may hold the request options
(``conf``, ``top_k``...). Response: ``{model_name, model_version, id, outputs}``, each output
``{name, datatype, shape, data}`` with ``data`` flattened in row-major order. Outputs per task
(N images; variable-length ones padded to the longest, their lengths given):

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
from ..results import Classification, Detections, Result, Segmentation
from ..runner.sinks import dumps

MAX_IMAGES_PER_REQUEST = 64

_OUTPUTS = {
    "classify": (("topk_indices", "INT64", [-1, -1]), ("topk_scores", "FP32", [-1, -1]),
                 ("topk_labels", "BYTES", [-1, -1])),
    "detect": (("boxes", "FP32", [-1, -1, 4]), ("scores", "FP32", [-1, -1]),
               ("class_ids", "INT64", [-1, -1]), ("labels", "BYTES", [-1, -1]),
               ("num_detections", "INT64", [-1])),
    "segment": (("mask", "INT32", [-1, -1, -1]), ("size", "INT64", [-1, 2])),
}
INPUT_NAME = "image"


class ProtocolError(TorchinferError):
    """A request that does not follow the protocol (HTTP 400, ``{"error": ...}``)."""


def model_metadata(name: str, task: str, platform: str) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs, -1 for a variable dimension."""
    outputs = [{"name": n, "datatype": d, "shape": s} for n, d, s in _OUTPUTS.get(task, ())]
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
    n = len(results)
    if task == "classify":
        rows = [r.topk for r in results if isinstance(r, Classification)]
        k = max(len(t) for t in rows)
        return {"topk_indices": ("INT64", [n, k], [c.index for t in rows for c in t]),
                "topk_scores": ("FP32", [n, k], [round(c.score, 6) for t in rows for c in t]),
                "topk_labels": ("BYTES", [n, k], [c.label for t in rows for c in t])}
    if task == "detect":
        dets = [r for r in results if isinstance(r, Detections)]
        m = max((len(d) for d in dets), default=0)
        boxes, scores, ids, labels = [], [], [], []
        for d in dets:
            pad = m - len(d)
            boxes += [round(float(v), 2) for v in d.boxes.reshape(-1)] + [0.0] * 4 * pad
            scores += [round(float(s), 5) for s in d.scores] + [0.0] * pad
            ids += [int(c) for c in d.class_ids] + [-1] * pad
            labels += list(d.labels) + [""] * pad
        return {"boxes": ("FP32", [n, m, 4], boxes), "scores": ("FP32", [n, m], scores),
                "class_ids": ("INT64", [n, m], ids), "labels": ("BYTES", [n, m], labels),
                "num_detections": ("INT64", [n], [len(d) for d in dets])}
    if task == "segment":
        segs = [r for r in results if isinstance(r, Segmentation)]
        h = max(s.size[0] for s in segs)
        w = max(s.size[1] for s in segs)
        masks = np.full((n, h, w), -1, dtype=np.int64)
        for i, s in enumerate(segs):
            assert s.mask is not None
            masks[i, : s.size[0], : s.size[1]] = s.mask
        return {"mask": ("INT32", [n, h, w], masks.reshape(-1).tolist()),
                "size": ("INT64", [n, 2], [v for s in segs for v in s.size])}
    return {}


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "torchinfer", "version": version, "extensions": []}
