"""The Open Inference Protocol over gRPC (``--grpc-port``): ``inference.GRPCInferenceService``'s
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, as KServe's
and Triton's clients call them, and Triton's RepositoryIndex, RepositoryModelLoad and
RepositoryModelUnload (``protocol/oip_v2.proto``).

It runs on the HTTP server's event loop and serves the same ``Server``: the same models'
processes, batchers, queues, limits and metrics (endpoint ``grpc_infer``). A request is turned
into the HTTP binary extension's shape (a JSON header and the raw bytes after it) and read by
``oip.read_request``, so both protocols take the same inputs and give the same outputs; the
outputs go back as ``raw_output_contents``. The API key is read from the call's metadata
(``authorization: Bearer KEY`` or ``x-api-key``) on every method but ServerLive.

A call whose deadline passes, or that its client cancels, cancels its wait: the model's
process then drops its images unrun if they are still queued (``process_client``), as an
HTTP request's timeout does.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..errors import InputError, OptionError, TorchinferError
from .batcher import QueueFull, ShuttingDown
from .guard import key_matches
from .oip import (
    GRPC_EXTENSIONS,
    ProtocolError,
    answered,
    model_metadata,
    read_request,
    refuse_load_parameters,
    server_metadata,
    tensor_bytes,
)
from .process_client import ModelProcessDied
from .protocol import oip_v2_pb2 as pb
from .server import NotReady, Server, UnknownModel
from .sniff import UnsupportedType

SERVICE = "inference.GRPCInferenceService"


class Unauthenticated(TorchinferError):
    pass


def _status(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status answering ``exc``, as the HTTP side's status (app._error)."""
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, (QueueFull,)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, (ShuttingDown, NotReady, ModelProcessDied)):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, UnknownModel):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, (ProtocolError, InputError, UnsupportedType, OptionError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, TorchinferError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _message(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return f"{exc.source}: {exc.reason}"
    return str(exc) or type(exc).__name__


class GrpcService:
    """The service's methods over ``server``; ``version``: what ServerMetadata says."""

    def __init__(self, server: Server, version: str):
        self.server = server
        self.version = version
        key = server.config.api_key
        self.key = key.encode() if key else None

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[..., Awaitable[Any]], Any, Any, bool]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, False),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse,
                            True),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, True),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest,
                               pb.ServerMetadataResponse, True),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest,
                              pb.ModelMetadataResponse, True),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse, True),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest,
                                pb.RepositoryIndexResponse, True),
            "RepositoryModelLoad": (self.load_model, pb.RepositoryModelLoadRequest,
                                    pb.RepositoryModelLoadResponse, True),
            "RepositoryModelUnload": (self.unload_model, pb.RepositoryModelUnloadRequest,
                                      pb.RepositoryModelUnloadResponse, True),
        }
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(
                self._guarded(method, guarded), request_deserializer=_reader(request),
                response_serializer=answer.SerializeToString)
            for name, (method, request, answer, guarded) in methods.items()})

    def _guarded(self, method: Callable[[Any], Awaitable[Any]], guarded: bool
                 ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if guarded and self.key is not None:
                    metadata = {k.lower(): v.encode() if isinstance(v, str) else v
                                for k, v in (context.invocation_metadata() or ())}
                    if not key_matches(self.key, metadata):
                        raise Unauthenticated("missing or wrong API key: send metadata "
                                              "'authorization: Bearer KEY'")
                if isinstance(request, Malformed):
                    raise ProtocolError(f"the request is not a {request.expected} message: "
                                        f"{request.reason}")
                return await method(request)
            except Exception as exc:  # every error is a status with a one-line reason
                await context.abort(_status(exc), _message(exc))
        return call

    async def server_live(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=not self.server.broken)

    async def server_ready(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def model_ready(self, request: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.server.model_ready(request.name))

    async def server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(**server_metadata(self.version, GRPC_EXTENSIONS))

    async def model_metadata(self, request: Any) -> Any:
        holder = self.server.holder(request.name)
        platform = "torchinfer_" + str((holder.describe().get("backend") or {})
                                       .get("backend", "torch"))
        meta = model_metadata(request.name, holder.task or "", platform)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]])

    async def repository_index(self, request: Any) -> Any:
        models = self.server.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in models])

    async def load_model(self, request: Any) -> Any:
        refuse_load_parameters(request.parameters)
        await self.server.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def unload_model(self, request: Any) -> Any:
        await self.server.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def model_infer(self, request: Any) -> Any:
        server, name = self.server, request.model_name
        t0 = time.perf_counter()
        label = name if name in server.holders else "(unknown)"
        status = 200
        try:
            holder = server.ready_holder(name)
            holder.admit()
            try:
                return await asyncio.wait_for(self._infer(holder, request),
                                              server.config.timeout_s)
            finally:
                holder.release()
        except Exception as exc:
            status = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503,
                      grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
                      grpc.StatusCode.DEADLINE_EXCEEDED: 504,
                      grpc.StatusCode.INTERNAL: 500}.get(_status(exc), 400)
            raise
        finally:
            server.metrics.answered(label, "grpc_infer", status, time.perf_counter() - t0)

    async def _infer(self, holder: Any, request: Any) -> Any:
        header, binary = as_http_request(request)
        out = await answered(holder, read_request(header, binary))
        return pb.ModelInferResponse(
            model_name=out["model_name"], model_version=out["model_version"],
            id=out.get("id", ""),
            outputs=[pb.ModelInferResponse.InferOutputTensor(
                name=o["name"], datatype=o["datatype"], shape=o["shape"]) for o in out["outputs"]],
            raw_output_contents=[tensor_bytes(o["datatype"], o["data"]) for o in out["outputs"]])


@dataclass(frozen=True)
class Malformed:
    """Bytes that do not parse as the method's request, answered INVALID_ARGUMENT (after the
    key check) instead of grpcio's INTERNAL."""

    expected: str
    reason: str


def _reader(message: Any) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(message.__name__, str(exc) or "it does not parse")
    return read


def _parameters(params: Any) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def as_http_request(request: Any) -> tuple[dict[str, Any], bytes]:
    """A ModelInferRequest as the HTTP protocol's JSON header and the raw bytes after it."""
    inputs = []
    binary = b""
    for i, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": list(tensor.shape),
                                 "parameters": _parameters(tensor.parameters)}
        if i < len(request.raw_input_contents):
            binary = request.raw_input_contents[i]
            entry["parameters"]["binary_data_size"] = len(binary)
        elif tensor.HasField("contents"):
            entry["data"] = [base64.b64encode(x).decode() for x in tensor.contents.bytes_contents]
        inputs.append(entry)
    if len(request.raw_input_contents) > len(request.inputs):
        raise ProtocolError(f"{len(request.raw_input_contents)} raw input contents for "
                            f"{len(request.inputs)} inputs")
    header: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(request.parameters)}
    if request.outputs:
        header["outputs"] = [{"name": o.name, "parameters": _parameters(o.parameters)}
                             for o in request.outputs]
    if request.id:
        header["id"] = request.id
    return header, binary


async def start(server: Server, host: str, port: int, version: str) -> grpc.aio.Server:
    """The gRPC server on ``host:port`` over ``server``, started; messages are capped at the
    HTTP body cap."""
    limit = server.config.max_body_bytes
    grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                           ("grpc.max_send_message_length", 256 * 1024 * 1024)])
    grpc_server.add_generic_rpc_handlers((GrpcService(server, version).handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if grpc_server.add_insecure_port(address) == 0:
        raise TorchinferError(f"cannot listen for gRPC on {address}")
    await grpc_server.start()
    return grpc_server
