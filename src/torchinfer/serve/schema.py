"""The OpenAPI description of the HTTP routes, served at ``/openapi.json`` (behind the key).

The handlers read their requests themselves: an image is a raw body or a multipart field, an
infer request may be a JSON header followed by binary tensors, so FastAPI cannot infer those
bodies from type hints. This module says what each route takes and answers, as pydantic
models collected into the schema's components, with each route's request body, query
parameters and every status it can answer. The tags tell torchinfer's own routes (``/v1``)
from the Open Inference Protocol's (``/v2``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

V1 = "torchinfer (v1)"
OIP = "Open Inference Protocol (v2)"
REF = "#/components/schemas/{model}"


class Error(BaseModel):
    error: str = Field(description="What went wrong and where, in one line.")


class FailedRecord(BaseModel):
    """An image that could not be read: the record ``predict`` writes for it."""

    source: str
    error: str
    speed: dict[str, Any]


class Record(BaseModel):
    """The JSON record ``torchinfer predict`` writes for one image; its fields beyond
    ``source`` are the task's (``topk``, ``objects``, ``classes``, ``heads``...)."""

    model_config = ConfigDict(extra="allow")
    source: str
    visualization: str | None = Field(None, description="The annotated picture as a PNG data "
                                                        "URL, with ?visualize=1.")


class ModelList(BaseModel):
    ready: bool
    auth: bool = Field(description="Whether requests need the API key.")
    max_body_bytes: int
    models: list[dict[str, Any]] = Field(description="Each model's name, task, labels, "
                                                     "preprocessing, backend and state.")
    indexes: list[dict[str, Any]]


class Match(BaseModel):
    row: int
    source: str
    similarity: float


class SearchAnswer(BaseModel):
    index: str
    model: str
    method: str
    query: Any
    matches: list[Match]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: a dimension of any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    name: str = Field(description="'image'")
    datatype: str = Field(description="BYTES: the encoded images.")
    shape: list[int] = Field(description="[N], at most 64 images.")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: the bytes this input takes after the JSON "
                          "header (binary tensor data extension).")
    data: list[Any] | None = Field(None, description="The images as base64 strings, when "
                                                     "they are not sent as binary data.")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data: true for raw bytes; datatype: a smaller integer "
                          "type the output allows (a mask as UINT8).")


class InferRequest(BaseModel):
    """The JSON of an infer request, or its header when binary tensors follow it
    (``Inference-Header-Content-Length``)."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="The model's request options (top_k, conf...), "
                          "binary_data_output, <output>_datatype.")
    inputs: list[RequestInput]
    outputs: list[RequestedOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="Row-major values; absent when the "
                                                     "output follows as binary data.")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class RepositoryIndexRequest(BaseModel):
    ready: bool = Field(False, description="Only the models ready to serve.")


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, LOADING or UNAVAILABLE.")
    reason: str


class LoadRequest(BaseModel):
    parameters: dict[str, Any] | None = Field(
        None, description="Refused when not empty: models are read only from the "
                          "server's repository folders.")


MODELS = (Error, FailedRecord, Record, ModelList, Match, SearchAnswer, Live, Ready, ModelReady,
          ServerMetadata, TensorMetadata, ModelMetadata, RequestInput, RequestedOutput,
          InferRequest, ResponseOutput, InferResponse, RepositoryIndexRequest, RepositoryModel,
          LoadRequest)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    said = {400: "The request does not follow the protocol.",
            401: "Missing or wrong API key.",
            404: "Unknown model or index.",
            413: "The body is over the server's cap.",
            415: "Not an accepted image type.",
            422: "A bad option, or an image that cannot be decoded.",
            503: "Queue full, not ready, or the model's process gone (Retry-After).",
            504: "No answer within the request timeout."}
    return {str(s): _json(_ref(Error), said[s]) for s in (401, *statuses)}


IMAGE_BODY = {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}}}}}}
IMAGE_ANSWERS = (400, 404, 413, 415, 503, 504)
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
INFER_BODY = {"required": True, "content": {
    "application/json": {"schema": _ref(InferRequest)},
    "application/octet-stream": {
        "schema": {"type": "string", "format": "binary"},
        "description": "The JSON header, of the length Inference-Header-Content-Length "
                       "gives, then the binary tensors."}}}
INFER_ANSWER = {"description": "The outputs; with binary outputs, the JSON header "
                               "(Inference-Header-Content-Length) and then their bytes.",
                "content": {"application/json": {"schema": _ref(InferResponse)},
                            "application/octet-stream": {"schema": {"type": "string",
                                                                    "format": "binary"}}}}
OPTIONAL_JSON = {"required": False, "content": {"application/json": {"schema": {}}}}

# (method, path) -> what the route takes and answers, beyond its path parameters
ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/v1/models"): {
        "tags": [V1], "summary": "What is served: models, their state and indexes",
        "responses": {"200": _json(_ref(ModelList), "The models and indexes."),
                      **_errors()}},
    ("post", "/v1/models/{name}/predict"): {
        "tags": [V1], "summary": "One image to the record predict writes",
        "parameters": [NAME, {"name": "visualize", "in": "query", "required": False,
                              "schema": {"type": "boolean"},
                              "description": "Add the annotated picture as a PNG data URL."}],
        "requestBody": IMAGE_BODY,
        "responses": {"200": _json(_ref(Record), "The image's record."),
                      "422": _json({"anyOf": [_ref(FailedRecord), _ref(Error)]},
                                   "The record of an image that cannot be decoded, or a "
                                   "bad option."),
                      **_errors(*IMAGE_ANSWERS)}},
    ("post", "/v1/search"): {
        "tags": [V1], "summary": "An image's or an indexed row's nearest inputs",
        "parameters": [{"name": "index", "in": "query", "required": True,
                        "schema": {"type": "string"}},
                       {"name": "k", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 1}},
                       {"name": "row", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0}}],
        "requestBody": {**IMAGE_BODY, "required": False},
        "responses": {"200": _json(_ref(SearchAnswer), "The nearest inputs."),
                      **_errors(422, *IMAGE_ANSWERS)}},
    ("get", "/v2"): {
        "tags": [OIP], "summary": "Server metadata and the extensions it implements",
        "responses": {"200": _json(_ref(ServerMetadata), "Name, version, extensions."),
                      **_errors()}},
    ("get", "/v2/health/live"): {
        "tags": [OIP], "summary": "Liveness (no key needed)",
        "responses": {"200": _json(_ref(Live), "Alive."),
                      "503": _json(_ref(Live), "A model's process died.")}},
    ("get", "/v2/health/ready"): {
        "tags": [OIP], "summary": "Readiness",
        "responses": {"200": _json(_ref(Ready), "Every model is ready."),
                      "503": _json(_ref(Ready), "Not yet, or no longer."), **_errors()}},
    ("get", "/v2/models/{name}"): {
        "tags": [OIP], "summary": "A model's inputs and outputs",
        "parameters": [NAME],
        "responses": {"200": _json(_ref(ModelMetadata), "Its tensors."), **_errors(404)}},
    ("get", "/v2/models/{name}/ready"): {
        "tags": [OIP], "summary": "Whether a model serves now",
        "parameters": [NAME],
        "responses": {"200": _json(_ref(ModelReady), "It does."),
                      "503": _json(_ref(ModelReady), "It does not."), **_errors(404)}},
    ("post", "/v2/models/{name}/infer"): {
        "tags": [OIP], "summary": "Inference: JSON, or with binary tensors",
        "description": "A body sent with Content-Encoding gzip or deflate is inflated (up to "
                       "the body cap); an answer is compressed when Accept-Encoding names "
                       "gzip or deflate.",
        "parameters": [NAME, {"name": "Inference-Header-Content-Length", "in": "header",
                              "required": False, "schema": {"type": "integer", "minimum": 1}}],
        "requestBody": INFER_BODY,
        "responses": {"200": INFER_ANSWER, **_errors(422, *IMAGE_ANSWERS)}},
    ("post", "/v2/repository/index"): {
        "tags": [OIP], "summary": "The models served and those the repository holds",
        "requestBody": {"required": False, "content": {
            "application/json": {"schema": _ref(RepositoryIndexRequest)}}},
        "responses": {"200": _json({"type": "array", "items": _ref(RepositoryModel)},
                                   "Each model and its state."), **_errors(400)}},
    ("post", "/v2/repository/models/{name}/load"): {
        "tags": [OIP], "summary": "Load a model of the repository; answers once it is ready",
        "parameters": [NAME],
        "requestBody": {"required": False, "content": {
            "application/json": {"schema": _ref(LoadRequest)}}},
        "responses": {"200": _json({"type": "object"}, "Loaded."),
                      **_errors(400, 404, 422)}},
    ("post", "/v2/repository/models/{name}/unload"): {
        "tags": [OIP], "summary": "Stop serving a model; requests in flight finish",
        "parameters": [NAME],
        "responses": {"200": _json({"type": "object"}, "Unloaded."), **_errors(404)}},
    ("get", "/metrics"): {
        "tags": [V1], "summary": "Prometheus metrics",
        "responses": {"200": {"description": "The text exposition format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **_errors()}},
}


def openapi_schema(app: FastAPI, version: str) -> dict[str, Any]:
    """The app's OpenAPI document: FastAPI's list of routes, each described by ``ROUTES``."""
    schema = get_openapi(title="torchinfer", version=version, routes=app.routes,
                         description="torchinfer's own routes (/v1) and the Open Inference "
                                     "Protocol v2 (/v2). Every route but liveness needs the "
                                     "API key when the server has one: 'Authorization: "
                                     "Bearer KEY' or 'X-API-Key: KEY'.",
                         tags=[{"name": V1, "description": "torchinfer's own routes."},
                               {"name": OIP, "description": "KServe's and Triton's protocol, "
                                                            "with the binary tensor data and "
                                                            "model repository extensions."}])
    for (method, path), described in ROUTES.items():
        operation = schema["paths"][path][method]
        operation.pop("requestBody", None)
        operation.update(described)
    _, definitions = models_json_schema([(m, "serialization") for m in MODELS],
                                        ref_template=REF)
    schema.setdefault("components", {})["schemas"] = definitions.get("$defs", {})
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    schema["security"] = [{"bearer": []}, {"apiKey": []}]
    schema["paths"]["/v2/health/live"]["get"]["security"] = []
    return schema
