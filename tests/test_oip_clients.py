"""The server as NVIDIA's own Python client (``tritonclient.http``) calls it: health, metadata,
and ``infer`` with the image as binary BYTES (the client's default) and the outputs as binary
tensors, against what the library answers for the same image."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import torchinfer as ti
from test_serve import KEY, live_server
from torchinfer.datasets import shapes as ds
from torchinfer.manifests import task_names
from torchinfer.serve import ModelSpec, ServeConfig

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed: "
                                 "pip install 'tritonclient[http]'")

MODELS = {"cls": "shapes_classifier", "seg": "shapes_segmenter", "vec": "embed:shapes_classifier",
          "det": "shapes_detector", "multi": "shapes_multitask"}


@pytest.fixture(scope="module")
def picture() -> bytes:
    buffer = io.BytesIO()
    ds.generate_scene(ds.scene_rng(31, 0), (200, 256)).image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served():
    """One server for the module: the models over HTTP, and over gRPC where grpcio is
    installed. Yields (HTTP base, gRPC address or None, the Server)."""
    import importlib.util
    import socket

    port = None
    if importlib.util.find_spec("grpc") is not None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    specs = tuple(ModelSpec.parse(f"{name}={model}", task_names())
                  for name, model in MODELS.items())
    config = ServeConfig(models=specs, api_key=KEY, warmup=False, grpc_port=port)
    with live_server(config) as (base, running):
        yield base, None if port is None else f"127.0.0.1:{port}", running


@pytest.fixture(scope="module")
def server(served):
    return served[0]


def client(base: str):
    return httpclient.InferenceServerClient(url=base.removeprefix("http://"))


def auth() -> dict[str, str]:
    """The key's header, afresh each call: tritonclient adds its own headers to the dict."""
    return {"Authorization": f"Bearer {KEY}"}


def image_input(picture: bytes, binary: bool = True):
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([picture], dtype=np.object_), binary_data=binary)
    return tensor


def test_health_and_metadata(server):
    c = client(server)
    assert c.is_server_live(headers=auth()) and c.is_server_ready(headers=auth())
    assert c.is_model_ready("cls", headers=auth())
    assert c.get_server_metadata(headers=auth())["extensions"] == ["binary_tensor_data",
                                                                   "model_repository"]
    meta = c.get_model_metadata("seg", headers=auth())
    assert meta["inputs"][0]["datatype"] == "BYTES"
    assert {o["name"] for o in meta["outputs"]} >= {"mask", "size", "record"}


def test_binary_in_binary_out_equals_the_library(server, picture):
    c = client(server)
    image = Image.open(io.BytesIO(picture)).convert("RGB")
    cls = c.infer("cls", [image_input(picture)], headers=auth())  # every output binary
    local = ti.load("classify", "shapes_classifier", device="cpu")(image)
    assert cls.as_numpy("topk_indices")[0].tolist() == [s.index for s in local.topk]
    assert np.allclose(cls.as_numpy("topk_scores")[0], [s.score for s in local.topk], atol=1e-5)
    assert [v.decode() for v in cls.as_numpy("topk_labels")[0]] == [s.label for s in local.topk]
    record = json.loads(cls.as_numpy("record")[0])
    assert record["topk"][0]["label"] == local.top1.label
    seg = c.infer("seg", [image_input(picture)], headers=auth(),
                  outputs=[httpclient.InferRequestedOutput("mask", binary_data=True),
                           httpclient.InferRequestedOutput("size", binary_data=False)])
    mask = seg.as_numpy("mask")
    assert mask.dtype == np.int32 and mask.shape == (1, 200, 256)
    assert seg.as_numpy("size").tolist() == [[200, 256]]
    expected = ti.load("segment", "shapes_segmenter", device="cpu")(image).mask
    assert (mask[0] == expected).mean() > 0.999
    small = c.infer("seg", [image_input(picture)], headers=auth(),
                    parameters={"mask_datatype": "UINT8"},
                    outputs=[httpclient.InferRequestedOutput("mask")]).as_numpy("mask")
    assert small.dtype == np.uint8 and np.array_equal(small, mask)
    from tritonclient.utils import InferenceServerException

    for datatype, said in (("FP32", "comes as INT32, UINT8, UINT16"), ("INT8", "not 'INT8'")):
        with pytest.raises(InferenceServerException, match=said):
            c.infer("seg", [image_input(picture)], headers=auth(),
                    parameters={"mask_datatype": datatype})
    vec = c.infer("vec", [image_input(picture)], headers=auth()).as_numpy("embedding")
    ours = ti.load("embed", "shapes_classifier", device="cpu")(image).vector
    assert vec.dtype == np.float32 and vec.shape == (1, len(ours))
    assert float(vec[0] @ ours) > 1 - 1e-4


def test_detections_and_a_multi_head_model_equal_predict(server, picture, tmp_path):
    """Boxes, scores and classes over binary, and a multi-head model's records (every head),
    against what ``torchinfer predict`` writes for the same file."""
    import subprocess
    import sys

    path = tmp_path / "scene.png"
    path.write_bytes(picture)
    c = client(server)
    det = c.infer("det", [image_input(picture)], headers=auth())
    n = int(det.as_numpy("num_detections")[0])
    records = {}
    for task, model in (("detect", "shapes_detector"), ("multi", "shapes_multitask")):
        out = tmp_path / task
        done = subprocess.run([sys.executable, "-m", "torchinfer", "predict", task, str(path),
                               "-m", model, "--out", str(out), "--quiet"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        records[task] = json.loads((out / "predictions.jsonl").read_text())
    expected = records["detect"]["detections"]
    assert n == len(expected) > 0
    assert np.allclose(det.as_numpy("boxes")[0, :n], [d["box"] for d in expected], atol=0.05)
    assert det.as_numpy("class_ids")[0, :n].tolist() == [d["class_id"] for d in expected]
    assert np.allclose(det.as_numpy("scores")[0, :n], [d["score"] for d in expected], atol=1e-4)
    multi = json.loads(c.infer("multi", [image_input(picture)], headers=auth())
                       .as_numpy("record")[0])
    assert set(multi["heads"]) == set(records["multi"]["heads"]) == {"shape", "mask", "objects"}
    assert multi["heads"]["shape"]["topk"][0]["label"] == \
        records["multi"]["heads"]["shape"]["topk"][0]["label"]
    assert len(multi["heads"]["objects"]["detections"]) == \
        len(records["multi"]["heads"]["objects"]["detections"])


def test_a_batch_of_images_and_json_outputs(server, picture):
    """Two images in one request, sent as binary; the outputs asked for as JSON."""
    c = client(server)
    other = io.BytesIO()
    ds.generate_scene(ds.scene_rng(31, 1), 160).image.save(other, "JPEG")
    tensor = httpclient.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([picture, other.getvalue()], dtype=np.object_))
    answer = c.infer("cls", [tensor], headers=auth(),
                     outputs=[httpclient.InferRequestedOutput("topk_indices", binary_data=False)])
    assert answer.as_numpy("topk_indices").shape[0] == 2
    assert answer.get_output("topk_indices")["data"]  # JSON data, not binary
    masks = c.infer("seg", [tensor], headers=auth(), parameters={"mask_datatype": "UINT8"},
                    outputs=[httpclient.InferRequestedOutput("mask", binary_data=False)])
    mask = masks.as_numpy("mask")
    assert mask.dtype == np.uint8 and mask.shape == (2, 200, 256)
    assert (mask[1, 160:] == 255).all() and (mask[1, :160, :160] < 255).all()  # 255 pads


def test_compressed_requests_and_answers(server, picture):
    """tritonclient's request and answer compression, gzip and deflate, give the plain
    answer; a compressed body that would inflate past the cap is a 413, garbage a 400."""
    import gzip

    import httpx

    c = client(server)
    plain = c.infer("seg", [image_input(picture)], headers=auth(),
                    parameters={"mask_datatype": "UINT8"})
    for algorithm in ("gzip", "deflate"):
        packed = c.infer("seg", [image_input(picture)], headers=auth(),
                         parameters={"mask_datatype": "UINT8"},
                         request_compression_algorithm=algorithm,
                         response_compression_algorithm=algorithm)
        assert np.array_equal(packed.as_numpy("mask"), plain.as_numpy("mask"))
    url = f"{server}/v2/models/seg/infer"
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(picture) + 4}}],
                         "parameters": {"binary_data_output": True}}).encode()
    body = header + len(picture).to_bytes(4, "little") + picture
    r = httpx.post(url, content=gzip.compress(body), headers={
        **auth(), "Content-Encoding": "gzip", "Accept-Encoding": "br;q=1, gzip;q=0.5",
        "Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) * 5 < len(r.content)  # httpx inflated it
    r = httpx.post(url, content=body, headers={
        **auth(), "Accept-Encoding": "gzip;q=0", "Inference-Header-Content-Length":
        str(len(header))})
    assert "content-encoding" not in r.headers and int(r.headers["content-length"]) == \
        len(r.content)
    bomb = gzip.compress(b"\0" * (21 * 1024 * 1024))  # 20 KB that inflate past the 20 MB cap
    assert len(bomb) < 100_000
    r = httpx.post(url, content=bomb, headers={**auth(), "Content-Encoding": "gzip"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    for encoding, data in (("gzip", b"not gzip at all"), ("gzip", gzip.compress(body)[:-40]),
                           ("br", body)):
        r = httpx.post(url, content=data, headers={**auth(), "Content-Encoding": encoding})
        assert r.status_code == 400 and "error" in r.json(), encoding


def test_bad_binary_bodies_are_400s(server, picture):
    import httpx

    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": 10}}]}).encode()
    url = f"{server}/v2/models/cls/infer"
    for body, length in ((header + b"\x05\x00\x00\x00abc", len(header)),  # length says 5
                         (header + b"0123456789", len(header)),  # a length of 0x33323130
                         (header, len(header) + 5), (header, "many")):
        r = httpx.post(url, content=body, headers={**auth(),
                                                   "Inference-Header-Content-Length": str(length)})
        assert r.status_code == 400 and "error" in r.json(), (body[-12:], length)
    r = httpx.post(url, content=header + b"x" * 10, headers=auth())  # no header length
    assert r.status_code == 400
    assert httpx.post(url, content=b"", headers={"Inference-Header-Content-Length": "1"}
                      ).status_code == 401  # the key first, whatever the body


# --- gRPC ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grpc_server(served):
    """(gRPC address, HTTP base, the Server) of the module's server."""
    base, address, running = served
    if address is None:
        pytest.skip("the grpc extra is not installed: pip install 'torchinfer[grpc]'")
    return address, base, running


def grpc_auth() -> dict[str, str]:
    """gRPC metadata keys are lower-case."""
    return {"authorization": f"Bearer {KEY}"}


def grpc_client(address: str):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    return grpcclient, grpcclient.InferenceServerClient(url=address)


def test_grpc_health_metadata_and_the_key(grpc_server):
    address, _, _ = grpc_server
    grpcclient, c = grpc_client(address)
    headers = grpc_auth()
    assert c.is_server_live()  # liveness needs no key, as over HTTP
    assert c.is_server_ready(headers=headers) and c.is_model_ready("cls", headers=headers)
    assert list(c.get_server_metadata(headers=headers).extensions) == ["model_repository"]
    meta = c.get_model_metadata("seg", headers=headers)
    assert meta.inputs[0].datatype == "BYTES" and "mask" in [o.name for o in meta.outputs]
    from tritonclient.utils import InferenceServerException

    for bad in ({}, {"authorization": "Bearer wrong-key-wrong-key"}):
        with pytest.raises(InferenceServerException, match="API key"):
            c.is_server_ready(headers=bad)
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.get_model_metadata("nope", headers=headers)


def test_grpc_infer_equals_http_infer(grpc_server, picture):
    address, base, running = grpc_server
    grpcclient, c = grpc_client(address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([picture], dtype=np.object_))
    over_http = client(base)
    for model in ("cls", "seg", "vec"):
        answer = c.infer(model, [tensor], headers=grpc_auth())
        expected = over_http.infer(model, [image_input(picture)], headers=auth())
        names = [o.name for o in answer.get_response().outputs]
        assert names == [o["name"] for o in expected.get_response()["outputs"]]
        for name in names:
            got, want = answer.as_numpy(name), expected.as_numpy(name)
            if name == "record":
                got, want = ([{k: v for k, v in json.loads(x).items() if k != "speed"}
                              for x in arr] for arr in (got, want))
                assert got == want
            else:
                assert got.dtype == want.dtype and np.array_equal(got, want), (model, name)
    requests = running.metrics.render()
    assert 'endpoint="grpc_infer"' in requests
    small = c.infer("seg", [tensor], headers=grpc_auth(), parameters={"mask_datatype": "UINT8"})
    assert small.as_numpy("mask").dtype == np.uint8
    assert np.array_equal(small.as_numpy("mask"), c.infer("seg", [tensor], headers=grpc_auth())
                          .as_numpy("mask"))
    options = c.infer("cls", [tensor], headers=grpc_auth(),
                      parameters={"top_k": 2},
                      outputs=[grpcclient.InferRequestedOutput("topk_labels")])
    assert options.as_numpy("topk_labels").shape == (1, 2)
    from tritonclient.utils import InferenceServerException

    broken = grpcclient.InferInput("image", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"not a picture"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="input element 0"):
        c.infer("cls", [broken], headers=grpc_auth())


def test_a_cancelled_grpc_call_frees_its_batch_slot(picture):
    """A call whose deadline passes while its image waits for a batch: DEADLINE_EXCEEDED, and
    the model's process drops the image unrun."""
    import socket
    import time

    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServeConfig(models=(ModelSpec("shapes_classifier", name="cls"),), warmup=False,
                         grpc_port=port, max_delay_ms=1000, max_batch_size=64)
    with live_server(config) as (_, running):
        c = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        tensor = grpcclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([picture], dtype=np.object_))
        with pytest.raises(InferenceServerException, match="Deadline"):
            c.infer("cls", [tensor], client_timeout=0.2)
        time.sleep(1.5)  # past the batch's wait: had it run, it would be counted
        assert running.holders["cls"].depth == 0
        assert running.metrics.batch_size.snapshot(model="cls") == (0, 0.0)
        assert c.infer("cls", [tensor]).as_numpy("topk_indices").shape[0] == 1  # still serves


def test_grpc_fuzz_never_breaks_the_server(grpc_server):
    """Random bytes, bad length prefixes, wrong datatypes and shapes: each an error status
    that names the client's mistake (never INTERNAL or UNKNOWN), and the server stays up."""
    import grpc
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from torchinfer.serve.protocol import oip_v2_pb2 as pb

    address, _, running = grpc_server
    channel = grpc.insecure_channel(address)
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    metadata = tuple(grpc_auth().items())
    client_mistakes = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

    def outcome(body: bytes) -> grpc.StatusCode:
        try:
            infer(body, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    tensor = pb.ModelInferRequest.InferInputTensor
    requests = st.builds(
        lambda model, name, datatype, shape, raw, params: pb.ModelInferRequest(
            model_name=model, inputs=[tensor(name=name, datatype=datatype, shape=shape)],
            raw_input_contents=raw, parameters={k: pb.InferParameter(string_param=v)
                                                for k, v in params.items()}),
        st.sampled_from(["cls", "seg", "nope", ""]), st.sampled_from(["image", "x"]),
        st.sampled_from(["BYTES", "FP32", "UINT8", "", "BYTES\x00"]),
        st.lists(st.integers(-2, 2 ** 62), max_size=3),
        st.lists(st.binary(max_size=24), max_size=2),
        st.dictionaries(st.sampled_from(["top_k", "conf", "mask_datatype", "x_datatype"]),
                        st.text(max_size=6), max_size=2)).map(lambda r: r.SerializeToString())

    @settings(max_examples=120, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=64), requests))
    def check(body: bytes) -> None:
        assert outcome(body) in client_mistakes | {grpc.StatusCode.OK}, body[:40]

    check()
    # a length prefix past the data, one short of it, and a datatype the input never takes
    picture = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    for raw, datatype in (((1 << 31).to_bytes(4, "little") + picture, "BYTES"),
                          ((len(picture) + 1).to_bytes(4, "little") + picture, "BYTES"),
                          (len(picture).to_bytes(4, "little") + picture, "FP32")):
        body = pb.ModelInferRequest(model_name="cls", raw_input_contents=[raw], inputs=[
            tensor(name="image", datatype=datatype, shape=[1])]).SerializeToString()
        assert outcome(body) == grpc.StatusCode.INVALID_ARGUMENT
    assert not running.broken and running.ready
    channel.close()


def test_kserves_own_clients(grpc_server, picture, tmp_path):
    """KServe's InferenceRESTClient (JSON and binary) and InferenceGRPCClient, run in their own
    environment (``make kserve-client``), answer what the library answers."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    python = root / ".venv-kserve" / "bin" / "python"
    if not python.exists():
        pytest.skip("KServe's client is not installed: make kserve-client (an environment of "
                    "its own, .venv-kserve: kserve pins protobuf < 7)")
    address, base, _ = grpc_server
    (tmp_path / "picture.png").write_bytes(picture)
    done = subprocess.run([str(python), str(root / "tests" / "kserve_client_run.py"), base,
                           address, KEY, str(tmp_path / "picture.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    image = Image.open(io.BytesIO(picture)).convert("RGB")
    top = [s.index for s in ti.load("classify", "shapes_classifier", device="cpu")(image).topk]
    mask = ti.load("segment", "shapes_segmenter", device="cpu")(image).mask
    answers = {**{f"rest {k}": v for k, v in found["rest"].items()},
               **{f"grpc {k}": v for k, v in found["grpc"].items()}}
    assert len(answers) == 7
    for name, outputs in answers.items():
        if "cls" in name:
            assert outputs["topk_indices"]["values"] == top, name
            assert outputs["topk_labels"]["datatype"] == "BYTES"
        else:
            got = np.array(outputs["mask"]["values"]).reshape(outputs["mask"]["shape"])[0]
            assert (got == mask).mean() > 0.999, name
            assert outputs["mask"]["datatype"] == ("UINT8" if "uint8" in name else "INT32")
    errors = found["errors"]
    assert "401" in errors["rest key"] and "API key" in errors["rest key"]
    assert "UNAUTHENTICATED" in errors["grpc key"]
    assert "INVALID_ARGUMENT" in errors["grpc broken image"]
    assert "input element 0" in errors["grpc broken image"]


@pytest.mark.slow  # a server of its own; the other tests drive tritonclient by default
def test_the_serving_guides_tritonclient_example_runs(picture, tmp_path, monkeypatch):
    """The serving guide's example (docs/guides/serving.md), as written, against the server its
    first line starts (only the ports put in)."""
    import re
    import socket
    from pathlib import Path

    pytest.importorskip("tritonclient.grpc")
    guide = Path(__file__).resolve().parents[1] / "docs" / "guides" / "serving.md"
    code = next(b for b in re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"),
                                      re.S)
                if b.startswith("# tritonclient, over HTTP and gRPC"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServeConfig(models=(ModelSpec("shapes_segmenter"), ModelSpec("shapes_classifier")),
                         warmup=False, grpc_port=port)
    with live_server(config) as (base, _):
        code = code.replace("127.0.0.1:8000", base.removeprefix("http://"))
        code = code.replace("127.0.0.1:8001", f"127.0.0.1:{port}")
        (tmp_path / "photo.jpg").write_bytes(picture)
        monkeypatch.chdir(tmp_path)
        names: dict = {}
        exec(compile(code, "serving guide tritonclient example", "exec"), names)
    image = Image.open(io.BytesIO(picture)).convert("RGB")
    expected = ti.load("segment", "shapes_segmenter", device="cpu")(image).mask
    assert names["mask"].dtype == np.uint8 and (names["mask"][0] == expected).mean() > 0.999
    local = ti.load("classify", "shapes_classifier", device="cpu")(image)
    assert names["labels"] == [s.label for s in local.topk[:3]]


# --- the model repository extension --------------------------------------------------------

def test_models_load_and_unload_from_the_repository_only(tmp_path, picture):
    import shutil

    import httpx
    from tritonclient.utils import InferenceServerException

    from torchinfer.models.bundled import bundled_path

    repository = tmp_path / "repository"
    repository.mkdir()
    shutil.copy(bundled_path("shapes_classifier"), repository / "shapes.safetensors")
    (repository / "notes.txt").write_text("not a model")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServeConfig(models=(ModelSpec("shapes_detector", name="det"),), api_key=KEY,
                         warmup=False, model_repository=(str(repository),), grpc_port=port)
    with live_server(config) as (base, running):
        c = client(base)
        index = {m["name"]: m for m in c.get_model_repository_index(headers=auth())}
        assert index["det"]["state"] == "READY" and index["shapes"]["state"] == "UNAVAILABLE"
        assert set(index) == {"det", "shapes"}  # the text file is not a model
        assert not c.is_model_ready("shapes", headers=auth())
        c.load_model("shapes", headers=auth())
        assert c.is_model_ready("shapes", headers=auth()) and c.is_server_ready(headers=auth())
        answer = c.infer("shapes", [image_input(picture)], headers=auth())
        image = Image.open(io.BytesIO(picture)).convert("RGB")
        local = ti.load("classify", "shapes_classifier", device="cpu")(image)
        assert answer.as_numpy("topk_indices")[0].tolist() == [s.index for s in local.topk]
        listed = httpx.get(f"{base}/v1/models", headers=auth()).json()["models"]
        assert {m["name"] for m in listed} == {"det", "shapes"}
        assert 'model="shapes"' in httpx.get(f"{base}/metrics", headers=auth()).text
        for bad in ("notes", "..%2F..%2Fetc", "missing"):
            with pytest.raises(InferenceServerException, match="model repository|not found"):
                c.load_model(bad, headers=auth())
        with pytest.raises(InferenceServerException, match="takes no parameters"):
            c.load_model("shapes", headers=auth(), config='{"backend": "onnx"}')
        assert httpx.post(f"{base}/v2/repository/models/shapes/unload").status_code == 401
        c.unload_model("shapes", headers=auth())
        assert not c.is_model_ready("shapes", headers=auth())
        with pytest.raises(InferenceServerException):
            c.infer("shapes", [image_input(picture)], headers=auth())
        index = {m["name"]: m for m in c.get_model_repository_index(headers=auth())}
        assert index["shapes"]["state"] == "UNAVAILABLE" and running.ready
        c.load_model("shapes", headers=auth())  # and back again
        assert c.is_model_ready("shapes", headers=auth())
        ready = httpx.post(f"{base}/v2/repository/index", json={"ready": True}, headers=auth())
        assert {m["name"] for m in ready.json()} == {"det", "shapes"}

        # the same over gRPC
        grpcclient, g = grpc_client(f"127.0.0.1:{port}")
        assert "model_repository" in g.get_server_metadata(headers=grpc_auth()).extensions
        g.unload_model("shapes", headers=grpc_auth())
        assert not g.is_model_ready("shapes", headers=grpc_auth())
        index = {m.name: m for m in g.get_model_repository_index(headers=grpc_auth()).models}
        assert index["shapes"].state == "UNAVAILABLE" and index["det"].state == "READY"
        assert [m.name for m in g.get_model_repository_index(headers=grpc_auth()).models
                if m.state == "READY"] == ["det"]
        with pytest.raises(InferenceServerException, match="API key"):
            g.load_model("shapes")
        with pytest.raises(InferenceServerException, match="takes no parameters"):
            g.load_model("shapes", headers=grpc_auth(), config='{"backend": "onnx"}')
        with pytest.raises(InferenceServerException, match="model repository"):
            g.load_model("notes", headers=grpc_auth())
        g.load_model("shapes", headers=grpc_auth())
        tensor = grpcclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([picture], dtype=np.object_))
        answer = g.infer("shapes", [tensor], headers=grpc_auth())
        assert answer.as_numpy("topk_indices")[0].tolist() == [s.index for s in local.topk]
