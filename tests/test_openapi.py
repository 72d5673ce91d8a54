"""The served OpenAPI schema, checked by schemathesis: requests generated from it, valid and
not, to a live server with a key, a classifier, a segmenter and a model repository. No answer
may be a 5xx, and every answer must be one the schema declares, in the shape it declares."""

from __future__ import annotations

import shutil
import zlib

import httpx
import pytest

from test_serve import KEY, live_server
from torchinfer.manifests import task_names
from torchinfer.serve import ModelSpec, ServeConfig

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (a "
                                   "dev dependency): pip install schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (installed with schemathesis)
from schemathesis import checks  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}
MODELS = {"cls": "shapes_classifier", "seg": "shapes_segmenter"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from torchinfer.models.bundled import bundled_path

    repository = tmp_path_factory.mktemp("repository")
    shutil.copy(bundled_path("shapes_classifier"), repository / "spare.safetensors")
    specs = tuple(ModelSpec.parse(f"{name}={model}", task_names())
                  for name, model in MODELS.items())
    config = ServeConfig(models=specs, api_key=KEY, warmup=False,
                         model_repository=(str(repository),))
    with live_server(config) as (base, server):
        yield base, server


@pytest.fixture(scope="module")
def api(served):
    base, _ = served
    return schemathesis.openapi.from_url(f"{base}/openapi.json", headers=AUTH)


def test_the_schema_is_served_behind_the_key_and_names_every_route(served):
    base, _ = served
    assert httpx.get(f"{base}/openapi.json").status_code == 401
    schema = httpx.get(f"{base}/openapi.json", headers=AUTH).json()
    from torchinfer.serve.schema import OIP, ROUTES, V1

    described = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert described == set(ROUTES)  # every route of the app, and only those
    tags = {p: ops[m]["tags"] for (m, p) in ROUTES for p2, ops in schema["paths"].items()
            if p2 == p}
    assert all(t == [V1] for p, t in tags.items() if not p.startswith("/v2"))
    assert all(t == [OIP] for p, t in tags.items() if p.startswith("/v2"))


def test_no_request_breaks_the_server_or_the_schema(api, served):
    """Each operation in turn, from hypothesis strategies of its schema (schemathesis' pytest
    plugin is not used: it does not run on this pytest)."""
    from hypothesis import given

    _, server = served
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 13

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            if "name" in (case.path_parameters or {}) and \
                    not case.path.startswith("/v2/repository"):
                # mostly a served model, so that bodies reach one; a made-up name now and then
                if zlib.crc32(repr(case.body).encode()) % 4:
                    case.path_parameters["name"] = \
                        "cls" if zlib.crc32(repr(case.query).encode()) % 2 else "seg"
            case.call_and_validate(headers=AUTH, timeout=60, checks=[
                checks.not_a_server_error, checks.status_code_conformance,
                checks.content_type_conformance, checks.response_schema_conformance])

        check()
    assert not server.broken and server.ready
