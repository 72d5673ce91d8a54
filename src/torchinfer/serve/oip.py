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

The binary tensor data extension (``binary_tensor_data``, what NVIDIA's ``tritonclient``
sends by default): the body is the JSON header, of the length the header
``Inference-Header-Content-Length`` gives, followed by raw tensor bytes; an input whose
``parameters.binary_data_size`` is set takes that many of them, its BYTES elements each a
4-byte little-endian length and the bytes. Outputs come back the same way when asked (an
output's ``parameters.binary_data``, or the request's ``binary_data_output``): little-endian
values in row-major order, ``parameters.binary_data_size`` in the JSON header, the bytes after
it in the order of the outputs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, TorchinferError
from ..manifests import task_manifest
from ..results import Result
from ..runner.sinks import dumps
from .sniff import UnsupportedType

MAX_IMAGES_PER_REQUEST = 64

INPUT_NAME = "image"
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data", "model_repository")  # over HTTP; gRPC has none of them
# numpy's little-endian type of each fixed-size datatype the outputs use
_NUMPY = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "INT16": "<i2",
          "INT8": "i1", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "BOOL": "?"}


@dataclass(frozen=True)
class InferRequest:
    """An infer request, read: the images, the model options, the outputs asked for (None:
    all), which of them come back as binary data, and the request's id."""

    images: list[bytes]
    options: dict[str, Any]
    wanted: list[str] | None
    binary: frozenset[str] | bool  # True: every output
    request_id: str | None


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(the JSON header, the binary data after it) of a request body."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise ProtocolError(f"Inference-Header-Content-Length {header_length!r} is not a "
                            "number") from None
    if not 0 < n <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {n} is outside the body's "
                            f"{len(body)} bytes")
    return body[:n], body[n:]


def read_bytes_elements(data: bytes, count: int) -> list[bytes]:
    """``count`` BYTES elements of the binary extension: each a 4-byte little-endian length,
    then that many bytes, filling ``data`` exactly."""
    out, at = [], 0
    for i in range(count):
        if at + 4 > len(data):
            raise ProtocolError(f"binary input: element {i} has no length (the data ends)")
        size = int.from_bytes(data[at:at + 4], "little")
        at += 4
        if at + size > len(data):
            raise ProtocolError(f"binary input: element {i} says {size} bytes, "
                                f"{len(data) - at} are left")
        out.append(data[at:at + size])
        at += size
    if at != len(data):
        raise ProtocolError(f"binary input: {len(data) - at} bytes after its {count} elements")
    return out


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


def read_request(body: Any, binary: bytes = b"") -> InferRequest:
    """An infer request's JSON header ``body`` and the ``binary`` data after it, read."""
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
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"input shape {shape} is not a list of sizes")
    count = int(np.prod(shape))
    if count > MAX_IMAGES_PER_REQUEST:
        raise ProtocolError(f"{count} images in one request: at most "
                            f"{MAX_IMAGES_PER_REQUEST}")
    own = tensor.get("parameters") or {}
    request_params = body.get("parameters") or {}
    if not isinstance(own, dict) or not isinstance(request_params, dict):
        raise ProtocolError("'parameters' must be an object")
    if "binary_data_size" in own:
        size = own["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise ProtocolError(f"input binary_data_size {size!r} does not match the "
                                f"{len(binary)} bytes after the JSON header")
        images = read_bytes_elements(binary, count)
    else:
        if binary:
            raise ProtocolError(f"{len(binary)} bytes after the JSON header, but the input "
                                "has no binary_data_size")
        images = _json_images(tensor.get("data"), count, shape)
    params = {**own, **request_params}
    # protocol words, not model options
    for key in ("content_type", "binary_data_size", "binary_data_output", "binary_data"):
        params.pop(key, None)
    outputs = body.get("outputs")
    wanted = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
        wanted = [str(o["name"]) for o in outputs]
    binary_out: frozenset[str] | bool = bool(request_params.get("binary_data_output", False))
    if not binary_out and outputs is not None:
        binary_out = frozenset(str(o["name"]) for o in outputs
                               if isinstance(o.get("parameters"), dict)
                               and o["parameters"].get("binary_data") is True)
    request_id = body.get("id")
    return InferRequest(images, params, wanted, binary_out,
                        None if request_id is None else str(request_id))


def _json_images(data: Any, count: int, shape: list[int]) -> list[bytes]:
    if isinstance(data, list) and data and isinstance(data[0], list):  # nested rows are allowed
        data = [x for row in data for x in (row if isinstance(row, list) else [row])]
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise ProtocolError("input data must be a list of base64 strings, one per image (or "
                            "binary data: the binary tensor data extension)")
    if count != len(data):
        raise ProtocolError(f"input shape {shape} does not match its {len(data)} elements")
    images = []
    for i, text in enumerate(data):
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError(f"input element {i} is not base64") from None
    return images


async def answered(holder: Any, asked: InferRequest) -> dict[str, Any]:
    """The response to ``asked`` from the model ``holder`` serves (``ModelHolder``): its
    images run side by side, through the model's batcher; an image that cannot be read is
    the request's error, naming the element."""
    options = holder.request_options(asked.options)
    answers = await asyncio.gather(
        *(holder.predict_bytes(data, f"{asked.request_id or 'input'}[{i}]", options)
          for i, data in enumerate(asked.images)), return_exceptions=True)
    results = []
    for i, answer in enumerate(answers):
        if isinstance(answer, (InputError, UnsupportedType)):
            reason = answer.reason if isinstance(answer, InputError) else str(answer)
            raise ProtocolError(f"input element {i}: {reason}")
        if isinstance(answer, BaseException):
            raise answer
        results.append(answer[0])
    return response(holder.name, holder.task or "", results, asked.wanted, asked.request_id)


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


def binary_body(answer: dict[str, Any], binary: frozenset[str] | bool) -> tuple[bytes, int]:
    """(body, JSON header length) of ``answer`` with the outputs ``binary`` names (True: all)
    as binary data after the JSON header."""
    blobs = []
    for output in answer["outputs"]:
        if binary is not True and output["name"] not in binary:
            continue
        blob = tensor_bytes(output["datatype"], output.pop("data"))
        output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(blob)}
        blobs.append(blob)
    header = dumps(answer).encode("utf-8")
    return header + b"".join(blobs), len(header)


def tensor_bytes(datatype: str, data: Sequence[Any]) -> bytes:
    """A tensor's flattened ``data`` as the binary extension lays it out."""
    if datatype == "BYTES":
        parts = []
        for item in data:
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts += [len(raw).to_bytes(4, "little"), raw]
        return b"".join(parts)
    if datatype not in _NUMPY:
        raise ProtocolError(f"no binary layout for datatype {datatype}")
    return np.asarray(data, dtype=_NUMPY[datatype]).tobytes()


def server_metadata(version: str, extensions: Sequence[str] = EXTENSIONS) -> dict[str, Any]:
    return {"name": "torchinfer", "version": version, "extensions": list(extensions)}
