"""The HTTP app: ``build_app(config)`` -> a FastAPI app serving the models of ``config``.

    POST /v1/models/{name}/predict     an image (multipart "file" or the raw body) -> the JSON
                                       record ``predict`` writes; options as query or form
                                       fields; ``?visualize=1`` adds the annotated PNG
    GET  /v1/models                    what is loaded: task, labels, preprocessing, backend
    GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready
    POST /v2/models/{name}/infer       the Open Inference Protocol v2 (oip.py)
    POST /v2/repository/index, /v2/repository/models/{name}/load|unload
                                       the model repository extension (repository.py)
    POST /v1/search?index=NAME&k=10    an image (as for predict) or ?row=N -> the index's
                                       nearest inputs by cosine (search.py)
    GET  /metrics                      Prometheus text (metrics.py)
    GET  /openapi.json                 the routes above as OpenAPI (schema.py)
    gRPC (--grpc-port)                 the OIP's GRPCInferenceService (grpc_service.py)
    GET  /                             the web page (static/)

Every error is JSON, ``{"error": "..."}``: 400 protocol, 401 key, 404 unknown model, 413 body
over the cap, 415 not an accepted image type, 422 an image that cannot be decoded (the
CLI record, whose ``error`` is the CLI's reason) or a bad option, 503 queue full, not ready or
the model's process gone (with Retry-After), 504 past the request timeout.

This process only speaks HTTP: it reads a request, checks its key, size, type and options,
and passes the bytes to the model's own process, which decodes, batches and runs them
(holder.py). Liveness turns false once a model's process has died (``Server.broken``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..errors import InputError, OptionError, TorchinferError
from ..runner.sinks import dumps
from .batcher import QueueFull, ShuttingDown
from .compression import MIN_COMPRESSED_BYTES, chosen, deflated, inflated
from .config import ServeConfig
from .guard import BodyTooLarge, Guard
from .holder import ModelHolder
from .metrics import CONTENT_TYPE
from .oip import (
    HEADER_LENGTH,
    ProtocolError,
    answered,
    encoded_body,
    model_metadata,
    read_request,
    refuse_load_parameters,
    server_metadata,
    split_body,
)
from .process_client import ModelProcessDied
from .schema import openapi_schema
from .search import ServedIndex, checked_k
from .server import NotReady, Server, UnknownModel
from .sniff import UnsupportedType
from .wire import ModelFailure

log = logging.getLogger("torchinfer.serve")
RETRY_AFTER_S = 1
MAX_FILENAME = 255


def static_dir() -> Path:
    return Path(str(resources.files(__package__) / "static"))


def build_app(config: ServeConfig, server: Server | None = None) -> FastAPI:
    """The app for ``config`` (or for an existing ``server``). Its lifespan starts loading the
    models in the background and, at shutdown, drains them; ``app.state.server`` is the
    Server."""
    server = server or Server(config)
    app = FastAPI(title="torchinfer", lifespan=_lifespan(server, config), docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")

    def described() -> dict[str, Any]:  # the routes as schema.py says, made once
        if app.openapi_schema is None:
            app.openapi_schema = openapi_schema(app, __version__)
        return app.openapi_schema

    app.openapi = described  # type: ignore[method-assign]
    app.state.server = server
    app.add_middleware(Guard, api_key=config.api_key,
                       max_body_bytes=config.max_body_bytes)
    _answer_errors_as_json(app)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    _add_page_and_v1_routes(app, server, config)
    _add_oip_routes(app, server)
    _add_repository_routes(app, server)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _lifespan(server: Server, config: ServeConfig
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start loading the models (and the gRPC server, when asked for); at shutdown, let gRPC's
    calls in flight finish and drain the models."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.start()
        grpc_server = None
        if config.grpc_port is not None:  # the same models over gRPC, on this event loop
            from .grpc_service import start as start_grpc

            grpc_server = await start_grpc(server, config.host, config.grpc_port, __version__)
        yield
        if grpc_server is not None:  # calls in flight finish first, as HTTP's do
            await grpc_server.stop(grace=server.config.timeout_s)
        # uvicorn has already waited for the requests in flight; this answers anything still
        # queued and stops the models' processes
        await asyncio.get_running_loop().run_in_executor(None, server.stop)

    return lifespan


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error as ``{"error": ...}`` with its status (``_error``)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"error": str(exc.detail)}, exc.status_code)

    # our errors (an unknown model...) are answers; anything else is a 500, logged
    @app.exception_handler(TorchinferError)
    async def known_error(request: Request, exc: Exception) -> Response:
        status, body, headers = _error(exc)
        return _json(body, status, headers)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> Response:
        status, body, headers = _error(exc)
        return _json(body, status, headers)


def _add_page_and_v1_routes(app: FastAPI, server: Server, config: ServeConfig) -> None:
    """The web page, and torchinfer's own API: the models, predict, search."""

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(static_dir() / "index.html", media_type="text/html")

    @app.get("/v1/models")
    async def list_models() -> Response:
        return _json({"ready": server.ready, "auth": config.api_key is not None,
                      "max_body_bytes": config.max_body_bytes,
                      "models": [h.describe() for h in server.holders.values()],
                      "indexes": [i.describe() for i in server.indexes.values()]})

    @app.post("/v1/search")
    async def search(request: Request) -> Response:
        query = dict(request.query_params)
        name = query.pop("index", None)
        if name not in server.indexes:
            known = ", ".join(server.indexes) or "none: start the server with --index RUN_DIR"
            raise UnknownModel(f"unknown index {name!r} (served: {known})")
        served = server.indexes[name]
        k = checked_k(query.pop("k", None))
        row = query.pop("row", None)
        if query:
            raise OptionError(f"unknown parameter(s) {', '.join(sorted(query))}: search takes "
                              "index, k and row")
        if row is not None:
            return _json(await _neighbours(served, k, row=row))
        return await _answered(server, served.model, "search",
                               lambda h: _search_image(h, served, k, request))

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> Response:
        return await _answered(server, name, "predict", lambda h: _predict(h, request))


def _add_oip_routes(app: FastAPI, server: Server) -> None:
    """The Open Inference Protocol v2: the server's and models' metadata and health, and
    inference (oip.py)."""

    @app.get("/v2")
    async def v2_metadata() -> Response:
        return _json(server_metadata(__version__))

    @app.get("/v2/health/live")
    async def live() -> Response:
        alive = not server.broken  # a model's process died: only a restart brings it back
        return _json({"live": alive}, 200 if alive else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json({"ready": server.ready}, 200 if server.ready else 503)

    @app.get("/v2/models/{name}")
    async def v2_model(name: str) -> Response:
        holder = server.holder(name)
        platform = "torchinfer_" + str((holder.describe().get("backend") or {})
                                       .get("backend", "torch"))
        return _json(model_metadata(name, holder.task or "", platform))

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> Response:
        ok = server.model_ready(name)
        return _json({"name": name, "ready": ok}, 200 if ok else 503)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        return await _answered(server, name, "infer", lambda h: _infer(h, request))


def _add_repository_routes(app: FastAPI, server: Server) -> None:
    """The OIP's model repository extension: index, load, unload (repository.py)."""

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> Response:
        return _json(server.repository_index(ready_only=await _ready_only(request)))

    @app.post("/v2/repository/models/{name}/load")
    async def load_model(name: str, request: Request) -> Response:
        await _no_files(request)
        await server.load_model(name)
        return _json({})

    @app.post("/v2/repository/models/{name}/unload")
    async def unload_model(name: str) -> Response:
        await server.unload_model(name)
        return _json({})


async def _answered(server: Server, name: str, endpoint: str,
                    handle: Callable[[ModelHolder], Awaitable[Response]]) -> Response:
    """Run ``handle`` for model ``name`` and count its answer (status, latency)."""
    t0 = time.perf_counter()
    label = name if name in server.holders else "(unknown)"  # no label per made-up name
    try:
        holder = server.ready_holder(name)
        holder.admit()
        try:
            answer = await asyncio.wait_for(handle(holder), server.config.timeout_s)
        finally:
            holder.release()
    except Exception as exc:
        status, body, headers = _error(exc, server)
        answer = _json(body, status, headers)
    server.metrics.answered(label, endpoint, answer.status_code, time.perf_counter() - t0)
    return answer


async def _ready_only(request: Request) -> bool:
    """An index request's ``{"ready": true}``: only the models ready to serve."""
    body = await request.body()
    if not body.strip():
        return False
    try:
        asked = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("an index request's body is JSON") from None
    ready = asked.get("ready", False) if isinstance(asked, dict) else None
    if not isinstance(ready, bool):
        raise ProtocolError("an index request is {\"ready\": true|false}")
    return ready


async def _no_files(request: Request) -> None:
    """A load request names a model of the repository and nothing else: a configuration or
    files sent with it (``parameters.config``, ``file:...``) are refused."""
    body = await request.body()
    if not body.strip():
        return
    try:
        parameters = (json.loads(body) or {}).get("parameters") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ProtocolError("a load request's body is JSON") from None
    refuse_load_parameters(parameters)


async def _image_of(request: Request) -> tuple[bytes, str, dict[str, str]]:
    """The image of a request (multipart field "file" or the raw body), its name, and the
    multipart form's other fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await request.body(), "<request body>", {}
    form = await request.form(max_files=1, max_fields=16)
    upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
    if upload is None:
        raise OptionError("multipart request without a file: send the image as field 'file'")
    data = await upload.read()
    source = (upload.filename or "<upload>")[:MAX_FILENAME]
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    await form.close()
    return data, source, fields


async def _predict(holder: ModelHolder, request: Request) -> Response:
    t0 = time.perf_counter()
    query = dict(request.query_params)
    visualize = query.pop("visualize", "0").lower() in ("1", "true", "yes", "on")
    data, source, fields = await _image_of(request)
    options = holder.request_options({**fields, **query})
    result, spent = await holder.predict_bytes(data, source, options)
    record = result.to_dict()
    if visualize:
        png = await holder.draw_png(data, source, result)
        record["visualization"] = "data:image/png;base64," + base64.b64encode(png).decode()
    total_ms = (time.perf_counter() - t0) * 1000
    timing = (f"queue;dur={spent.queue_wait_s * 1000:.2f}, "
              f"compute;dur={spent.compute_s * 1000:.2f}, "
              f"total;dur={total_ms:.2f}")
    return Response(dumps(record), media_type="application/json",
                    headers={"Server-Timing": timing, "X-Batch-Size": str(spent.batch_size)})


async def _search_image(holder: ModelHolder, served: ServedIndex, k: int,
                        request: Request) -> Response:
    data, source, _ = await _image_of(request)
    result, _ = await holder.predict_bytes(data, source, {})
    return _json(await _neighbours(served, k, vector=result.vector, source=source))


async def _neighbours(served: ServedIndex, k: int, *, row: str | None = None,
                      vector: Any = None, source: str | None = None) -> dict[str, Any]:
    """The ``k`` nearest of ``served``'s inputs to ``vector``, or to its own ``row`` (which is
    left out), searched on a thread."""
    index = served.index
    own = None
    if row is not None:
        if not row.isdigit() or int(row) >= len(index):
            raise OptionError(f"row must be in [0, {len(index) - 1}], got {row!r}")
        own = int(row)
        vector = index.vectors[own]
    query = np.asarray(vector, dtype=np.float32)[None]
    found = await asyncio.to_thread(index.search, query, k + (own is not None))
    matches = [{"row": int(r), "source": index.sources[int(r)],
                "similarity": round(float(s), 6)}
               for r, s in zip(found.rows[0], found.scores[0]) if r >= 0 and r != own][:k]
    return {"index": served.name, "model": served.model, "method": found.method,
            "query": source if own is None else {"row": own, "source": index.sources[own]},
            "matches": matches}


async def _infer(holder: ModelHolder, request: Request) -> Response:
    body = await request.body()
    if request.headers.get("content-encoding"):  # tritonclient's request compression
        body = await asyncio.to_thread(inflated, body, request.headers["content-encoding"],
                                       holder.config.max_body_bytes)
    header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
    try:
        body = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the request's JSON header is not JSON: {exc}") from None
    asked = read_request(body, binary)
    answer = await answered(holder, asked)
    content, length = encoded_body(answer, asked.binary)
    headers = {"Vary": "Accept-Encoding"}
    if length is not None:
        headers["Inference-Header-Content-Length"] = str(length)  # of the JSON, uncompressed
    encoding = chosen(request.headers.get("accept-encoding"))
    if encoding is not None and len(content) >= MIN_COMPRESSED_BYTES:
        content = await asyncio.to_thread(deflated, content, encoding)
        headers["Content-Encoding"] = encoding
    return Response(content, headers=headers, media_type="application/json" if length is None
                    else "application/octet-stream")


def _error(exc: BaseException, server: Server | None = None
           ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) answering ``exc``."""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, (QueueFull, ShuttingDown, NotReady, ModelProcessDied)):
        return 503, {"error": str(exc)}, retry
    if isinstance(exc, UnknownModel):
        return 404, {"error": str(exc)}, {}
    if isinstance(exc, BodyTooLarge):
        return 413, {"error": str(exc)}, {"Connection": "close"}
    if isinstance(exc, UnsupportedType):
        return 415, {"error": str(exc)}, {}
    if isinstance(exc, InputError):
        # the record predict writes for this input: source, error (the same reason), speed
        return 422, {"source": exc.source, "error": exc.reason, "speed": {}}, {}
    if isinstance(exc, ProtocolError):
        return 400, {"error": str(exc)}, {}
    if isinstance(exc, (OptionError, TorchinferError)):
        return 422, {"error": str(exc)}, {}
    if isinstance(exc, StarletteHTTPException):  # e.g. a malformed multipart body
        return exc.status_code, {"error": str(exc.detail)}, {}
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        limit = server.config.timeout_s if server is not None else None
        return 504, {"error": f"no answer within the request timeout ({limit} s)"}, {}
    if isinstance(exc, ModelFailure):  # logged with its traceback by the model's process
        return 500, {"error": f"internal error: {exc}"}, {}
    log.error("internal error", exc_info=exc)
    return 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}, {}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json",
                    headers=headers)
