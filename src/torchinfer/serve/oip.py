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

An output may be asked for as a smaller integer datatype its manifest allows (a mask as UINT8
or UINT16, the padding then 255 / 65535): the output's ``parameters.datatype``, or the
request's ``parameters["<output>_datatype"]`` (the form ``tritonclient`` can send).

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
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
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
EXTENSIONS = ("binary_tensor_data", "model_repository")  # over HTTP
GRPC_EXTENSIONS = ("model_repository",)  # gRPC carries raw tensor bytes itself
DATATYPE_SUFFIX = "_datatype"  # a request parameter "mask_datatype": the datatype of "mask"
# numpy's little-endian type of each fixed-size datatype the outputs use
_NUMPY = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "INT16": "<i2",
          "INT8": "i1", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "BOOL": "?"}


@dataclass(frozen=True)
class InferRequest:
    """An infer request, read: the images, the model options, the outputs asked for (None:
    all), which of them come back as binary data, the datatypes asked of outputs
    (``parameters.datatype``), and the request's id."""

    images: list[bytes]
    options: dict[str, Any]
    wanted: list[str] | None
    binary: frozenset[str] | bool  # True: every output
    request_id: str | None
    datatypes: dict[str, str] = field(default_factory=dict)


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


def refuse_load_parameters(parameters: Collection[Any]) -> None:
    """A load request names a model of the repository and nothing else: a configuration or
    files sent with it (``config``, ``file:...``) are refused."""
    if parameters:
        raise ProtocolError(f"a load request takes no parameters (got "
                            f"{', '.join(sorted(map(str, parameters)))}): models are read "
                            "only from the server's model repository folders")


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
    count = math.prod(shape)  # Python's integers: a huge shape cannot wrap round
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
    datatypes = {key.removesuffix(DATATYPE_SUFFIX): str(params.pop(key))
                 for key in [k for k in params if k.endswith(DATATYPE_SUFFIX)]}
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
    datatypes.update({str(o["name"]): str(o["parameters"]["datatype"]) for o in outputs or ()
                      if isinstance(o.get("parameters"), dict) and "datatype" in o["parameters"]})
    request_id = body.get("id")
    return InferRequest(images, params, wanted, binary_out,
                        None if request_id is None else str(request_id), datatypes)


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
    check_outputs(holder.task or "", asked)  # before any work
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
    return response(holder.name, holder.task or "", results, asked.wanted, asked.request_id,
                    asked.datatypes)


def check_outputs(task: str, asked: InferRequest) -> None:
    """The outputs ``asked`` names, and the datatypes it asks of them, are the task's."""
    outputs = {t.name: (t.datatype, *t.narrower) for t in task_manifest(task).outputs}
    outputs["record"] = ("BYTES",)
    unknown = [n for n in (*(asked.wanted or ()), *asked.datatypes) if n not in outputs]
    if unknown:
        raise ProtocolError(f"unknown output(s) {', '.join(unknown)}: this model has "
                            f"{', '.join(outputs)}")
    for name, datatype in asked.datatypes.items():
        if datatype not in outputs[name]:
            raise ProtocolError(f"output {name!r} comes as {', '.join(outputs[name])}, not "
                                f"{datatype!r}")


def response(name: str, task: str, results: Sequence[Result], wanted: list[str] | None,
             request_id: str | None, datatypes: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """The infer response for ``results`` (all succeeded), of the outputs and datatypes
    ``check_outputs`` passed; an output's data is a list or a numpy array (``encoded_body``
    writes either)."""
    tensors = _tensors(task, results)
    tensors["record"] = ("BYTES", [len(results)], [dumps(r.to_dict()) for r in results])
    for output, datatype in (datatypes or {}).items():
        tensors[output] = _narrowed(output, tensors[output], datatype)
    names = wanted if wanted is not None else list(tensors)
    out: dict[str, Any] = {"model_name": name, "model_version": "1",
                           "outputs": [{"name": n, "datatype": tensors[n][0],
                                        "shape": tensors[n][1], "data": tensors[n][2]}
                                       for n in names]}
    if request_id is not None:
        out["id"] = request_id
    return out


def _tensors(task: str, results: Sequence[Result]) -> dict[str, tuple[str, list[int], Any]]:
    encode = task_manifest(task).encode
    return dict(encode(results)) if encode is not None else {}


def _narrowed(name: str, tensor: Any, datatype: str) -> Any:
    """``tensor`` as ``datatype``, a smaller integer type its manifest allows: the padding
    (-1) becomes the type's largest value, which no real value may reach."""
    own, shape, data = tensor
    if datatype == own:
        return tensor
    values = np.asarray(data)
    largest = int(np.iinfo(_NUMPY[datatype]).max)
    if values.size and int(values.max()) >= largest:
        raise ProtocolError(f"output {name!r} holds {int(values.max())}: {datatype} holds "
                            f"values below {largest}, its largest marking the padding; ask "
                            f"for {own}")
    return datatype, shape, np.where(values < 0, largest, values).astype(_NUMPY[datatype])


def encoded_body(answer: dict[str, Any], binary: frozenset[str] | bool
                 ) -> tuple[bytes, int | None]:
    """(body, JSON header length) of ``answer``: JSON, with the outputs ``binary`` names
    (True: all) as binary data after it; the length is None when nothing is binary."""
    blobs = []
    for output in answer["outputs"]:
        if binary is True or (binary and output["name"] in binary):
            blob = tensor_bytes(output["datatype"], output.pop("data"))
            output["parameters"] = {**output.get("parameters", {}),
                                    "binary_data_size": len(blob)}
            blobs.append(blob)
        elif isinstance(output["data"], np.ndarray):
            output["data"] = output["data"].reshape(-1).tolist()
    header = dumps(answer).encode("utf-8")
    return header + b"".join(blobs), len(header) if blobs else None


def tensor_bytes(datatype: str, data: Any) -> bytes:
    """A tensor's ``data`` (a flattened list, or an array) as the binary extension lays it
    out."""
    if datatype == "BYTES":
        parts = []
        for item in data:
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts += [len(raw).to_bytes(4, "little"), raw]
        return b"".join(parts)
    if datatype not in _NUMPY:
        raise ProtocolError(f"no binary layout for datatype {datatype}")
    return np.ascontiguousarray(data, dtype=_NUMPY[datatype]).tobytes()


def server_metadata(version: str, extensions: Sequence[str] = EXTENSIONS) -> dict[str, Any]:
    return {"name": "torchinfer", "version": version, "extensions": list(extensions)}
