"""Image embeddings: timm's own pre-logits and ``pipeline("image-feature-extraction")`` as
oracles, what ``predict embed`` writes (and resumes), a user's module, a multi-head model's
embedding head, retrieval scores, and search against brute force."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchinfer as ti
from hub_fixtures import photos, save_hf_folder, save_timm_folder  # noqa: E402
from torchinfer.vectors.index import exact_search
from torchinfer.vectors.store import append_vector, compact, read_vectors

EXACT = dict(device="cpu", backend="torch", precision="fp32", exact_decode=True)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return 1.0 - np.sum(a * b, axis=-1)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    return photos(tmp_path_factory.mktemp("embed_photos"))[:4]


@pytest.mark.parametrize("arch", ["resnet10t", "vit_tiny_patch16_224"])
def test_vectors_are_timms_pre_logits(arch, pictures, tmp_path):
    """timm's own loop: its transform, then ``forward_head(forward_features(x),
    pre_logits=True)``: the classifier of the folder's model is dropped, nothing else."""
    timm = pytest.importorskip("timm")
    folder = save_timm_folder(tmp_path / arch, arch)
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference))
    with torch.inference_mode():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in pictures])
        expected = reference.forward_head(reference.forward_features(batch),
                                          pre_logits=True).numpy()
    results = ti.load("embed", str(folder), **EXACT)([str(p) for p in pictures])
    got = np.stack([r.vector for r in results])
    assert got.shape == expected.shape and got.shape[1] == reference.num_features
    assert cosine_distance(got, expected).max() < 1e-4
    assert np.allclose([r.norm for r in results], np.linalg.norm(expected, axis=1), rtol=1e-3)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_vectors_are_the_transformers_pipelines_pooled_output(pictures, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = save_hf_folder(tmp_path / "vit", "vit_model")
    pipe = transformers.pipeline("image-feature-extraction", model=str(folder), device="cpu",
                                 pool=True)
    expected = np.stack([np.asarray(pipe(Image.open(p).convert("RGB"))).reshape(-1)
                         for p in pictures])
    predictor = ti.load("embed", str(folder), **EXACT)
    assert predictor.model.source == "transformers"
    got = np.stack([r.vector for r in predictor([str(p) for p in pictures])])
    assert got.shape == expected.shape == (len(pictures), 64)
    assert cosine_distance(got, expected).max() < 1e-4
    assert cosine_distance(got[:1], got[1:]).min() > 1e-4  # the pictures' vectors differ


class TwoOutputs(torch.nn.Module):
    """Known features: a dict of the channel means and the raw (N, 3, H, W) map."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"means": x.mean(dim=(2, 3)), "map": x}


def test_a_users_module_given_the_output_to_read():
    red, grey = Image.new("RGB", (64, 48), (255, 0, 0)), Image.new("RGB", (64, 48), (90, 90, 90))
    plain = dict(device="cpu", backend="torch", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for output in ("means", "map"):  # the map is averaged over space: the same vector
        first, second = ti.load("embed", TwoOutputs(), output=output, **plain)([red, grey])
        assert np.allclose(first.vector, [1.0, 0.0, 0.0], atol=1e-6)
        assert np.allclose(second.vector, np.full(3, 3 ** -0.5), atol=1e-6)
        assert first.norm == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ti.TorchinferError, match="--output KEY"):
        ti.load("embed", TwoOutputs(), **plain)(red)


def test_a_classifier_keeps_its_head_when_something_follows_it():
    """A model whose output is not its last linear layer's (a softmax after it) is embedded
    as it is: only a head whose output *is* the model's output is dropped."""
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4), torch.nn.Softmax(-1))
    module(torch.zeros(1, 3, 8, 8))
    vector = ti.load("embed", module, device="cpu", backend="torch", input_size=8)(
        Image.new("RGB", (8, 8), (10, 200, 30))).vector
    assert vector.shape == (4,) and (vector > 0).all()
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    predictor = ti.load("embed", linear, device="cpu", backend="torch", input_size=8)
    assert predictor(Image.new("RGB", (8, 8), (10, 200, 30))).dim == 192
    assert isinstance(linear[1], torch.nn.Linear)  # the caller's module is left as it was


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchinfer", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_predict_embed_writes_rows_that_match_and_resumes(pictures, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in pictures[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"not a picture")
    out = tmp_path / "run"
    # a bundled classifier: the same weights in every process
    common = ["predict", "embed", str(images), "-m", "shapes_classifier", "--out", str(out),
              "--quiet", "--backend", "torch", "--allow-failures"]
    done = run_cli(*common)
    assert done.returncode == 0, done.stderr
    # a fourth picture arrives; the broken file is tried again and the others are kept
    (images / pictures[3].name).write_bytes(pictures[3].read_bytes())
    done = run_cli(*common, "--resume")
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    vectors = np.load(out / "embeddings.npy")
    ok = [r for r in records if "error" not in r]
    assert len(records) == 5 and len(ok) == 4 and vectors.shape == (4, ok[0]["dim"])
    assert sorted(r["row"] for r in ok) == [0, 1, 2, 3]
    assert all("row" not in r for r in records if "error" in r)
    predictor = ti.load("embed", "shapes_classifier", device="cpu", backend="torch")
    for record in ok:
        again = predictor(record["source"]).vector
        assert cosine_distance(vectors[record["row"]], again) < 1e-4, record["source"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["embeddings"] == str(out / "embeddings.npy")
    # --exist-ok replaces the vectors with the records
    done = run_cli("predict", "embed", str(images / pictures[0].name), "-m",
                   "shapes_classifier", "--out", str(out), "--quiet", "--backend", "torch",
                   "--exist-ok")
    assert done.returncode == 0, done.stderr
    assert np.load(out / "embeddings.npy").shape == (1, vectors.shape[1])


def test_the_store_survives_a_torn_row_and_compacts(tmp_path):
    path = tmp_path / "embeddings.npy"
    rows = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    for i, row in enumerate(rows[:3]):
        assert append_vector(path, row) == i
        assert np.array_equal(np.load(path), rows[:i + 1])  # a valid .npy after every row
    with open(path, "ab") as f:  # a kill in the middle of a row
        f.write(b"\x00" * 9)
    assert append_vector(path, rows[3]) == 3
    assert np.array_equal(read_vectors(path), rows[:4])
    compact(path, [3, 1])
    assert np.array_equal(np.load(path), rows[[3, 1]])
    assert append_vector(path, rows[4]) == 2
    with pytest.raises(ti.TorchinferError, match="7-d vectors; this model gives 3-d"):
        append_vector(path, np.zeros(3, np.float32))


def test_exact_search_equals_brute_force():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((10_000, 48)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(len(vectors), 50, replace=False)] + \
        0.1 * rng.standard_normal((50, 48)).astype(np.float32)
    found = exact_search(vectors, queries, 10)
    sims = queries @ vectors.T
    brute = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    assert np.array_equal(found.rows, brute)
    assert np.allclose(found.scores, np.take_along_axis(sims, brute, 1), atol=1e-6)
    few = exact_search(vectors[:3], queries[:2], 5)
    assert (few.rows[:, 3:] == -1).all() and np.isnan(few.scores[:, 3:]).all()


def test_an_embedding_head_of_a_multi_head_model():
    class ShapeAndVector(torch.nn.Module):
        def forward(self, x):
            return {"shape": x.mean(dim=(2, 3)) * 10, "vector": x}

    heads = [{"name": "shape", "task": "classify", "output": "shape", "labels": ["r", "g", "b"]},
             {"name": "look", "task": "embed", "output": "vector"}]
    predictor = ti.load("multi", ShapeAndVector(), heads=heads, input_size=64, device="cpu",
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    result = predictor(Image.new("RGB", (64, 64), (255, 0, 0)))
    look = result.heads["look"]
    assert look.dim == 3 and np.allclose(look.vector, [1.0, 0.0, 0.0], atol=1e-6)
    assert result.heads["shape"].top1.label == "r"


def test_eval_embed_scores_retrieval(tmp_path):
    """Two classes that differ in colour: a colour's nearest neighbour is of its colour."""
    data = tmp_path / "folder"
    rng = np.random.default_rng(2)
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (data / name).mkdir(parents=True)
        for i in range(4):
            noisy = np.clip(np.array(colour) + rng.integers(-20, 20, (32, 32, 3)), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(data / name / f"{i}.png")
    report = ti.evaluate("embed", TwoOutputs(), data, output="means", device="cpu",
                         backend="torch", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert report.recall == {1: 1.0, 5: 1.0} and report.evaluated == 8
    assert report.per_class_recall1 == {"blue": 1.0, "red": 1.0}
    done = run_cli("eval", "embed", "resnet18", "--data", str(data), "--backend", "torch")
    assert done.returncode == 0, done.stderr
    assert "recall@1" in done.stdout


def test_the_oip_output_of_embeddings():
    from torchinfer.manifests.embed import Embedding, encode

    rows = [Embedding(source=str(i), vector=np.full(3, i, np.float32)) for i in range(2)]
    datatype, shape, data = encode(rows)["embedding"]
    assert datatype == "FP32" and shape == [2, 3]
    assert np.asarray(data).reshape(-1).tolist() == [0.0] * 3 + [1.0] * 3


def test_embed_is_refused_for_a_model_of_another_task():
    done = run_cli("predict", "embed", os.devnull, "-m", "fcn_resnet50")
    assert done.returncode == 2 and "is a segment model, not embed" in done.stderr


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory) -> Path:
    """A predict embed run of the bundled classifier (the same weights in every process) over
    eight shapes scenes."""
    from torchinfer.datasets import shapes as ds

    root = tmp_path_factory.mktemp("scene_run")
    for i in range(8):
        ds.generate_scene(ds.scene_rng(5, i), 160).image.save(root / f"scene{i}.png")
    done = run_cli("predict", "embed", str(root), "-m", "shapes_classifier", "--out",
                   str(root / "run"), "--quiet", "--backend", "torch")
    assert done.returncode == 0, done.stderr
    return root


def test_search_from_the_library_and_the_command_line(scene_run):
    picture = scene_run / "scene3.png"
    by_row, by_file = ti.search([3, str(picture)], scene_run / "run", k=3)
    assert by_row.row == by_file.row == 3 and by_row.matches == by_file.matches
    assert 3 not in [m.row for m in by_row.matches] and len(by_row.matches) == 3
    copy = scene_run / "copy.jpg"  # not in the index: embedded by the index's model
    Image.open(picture).save(copy, quality=95)
    (found,) = ti.search([str(copy)], scene_run / "run", k=2)
    assert found.row is None and found.matches[0].row == 3
    assert found.matches[0].similarity > 0.99
    done = run_cli("search", str(copy), "2", "--index", str(scene_run / "run"), "-k", "2",
                   "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert lines[0]["matches"][0]["row"] == 3 and lines[1]["row"] == 2
    missing = run_cli("search", str(scene_run / "nope.png"), "--index", str(scene_run / "run"))
    assert missing.returncode == 1 and "file not found" in missing.stderr


def test_served_search_and_the_oip_vector(scene_run):
    import httpx

    from test_serve import KEY, live_server
    from torchinfer.serve import ModelSpec, ServeConfig
    from torchinfer.serve.config import IndexSpec

    config = ServeConfig(models=(ModelSpec("shapes_classifier", task="embed", name="look"),),
                         indexes=(IndexSpec(str(scene_run / "run"), "scenes"),),
                         api_key=KEY, warmup=False)
    picture = (scene_run / "scene3.png").read_bytes()
    auth = {"Authorization": f"Bearer {KEY}"}
    with live_server(config) as (base, _):
        assert httpx.post(f"{base}/v1/search?index=scenes", content=picture).status_code == 401
        answer = httpx.post(f"{base}/v1/search?index=scenes&k=3", content=picture,
                            headers=auth).json()
        assert answer["model"] == "look" and answer["matches"][0]["row"] == 3
        assert answer["matches"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
        by_row = httpx.post(f"{base}/v1/search?index=scenes&k=3&row=3", headers=auth).json()
        expected = ti.search([3], scene_run / "run", k=3)[0]
        assert [m["row"] for m in by_row["matches"]] == [m.row for m in expected.matches]
        for bad in ("index=nope", "index=scenes&k=0", "index=scenes&row=99"):
            r = httpx.post(f"{base}/v1/search?{bad}", content=picture, headers=auth)
            assert r.status_code in (404, 422) and "error" in r.json(), bad
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "data": [base64.b64encode(picture).decode()]}]}
        oip = httpx.post(f"{base}/v2/models/look/infer", json=body, headers=auth).json()
        out = next(o for o in oip["outputs"] if o["name"] == "embedding")
        local = ti.load("embed", "shapes_classifier", device="cpu", backend="torch")
        vector = local(str(scene_run / "scene3.png")).vector
        assert out["name"] == "embedding" and out["datatype"] == "FP32"
        assert out["shape"] == [1, len(vector)]
        assert cosine_distance(np.asarray(out["data"]), vector) < 1e-4
    other = ServeConfig(models=(ModelSpec("shapes_detector"),),
                        indexes=(IndexSpec(str(scene_run / "run"), "scenes"),), warmup=False)
    with pytest.raises(ti.TorchinferError, match="serve that model too"):
        from torchinfer.serve.server import Server

        Server(other)


def test_the_approximate_index_is_saved_rebuilt_and_agrees(tmp_path):
    pytest.importorskip("usearch", reason="the search extra is not installed: pip install "
                        "'torchinfer[search]'")
    from torchinfer.vectors.index import ann_index, nearest

    rng = np.random.default_rng(3)
    path = tmp_path / "embeddings.npy"
    vectors = rng.standard_normal((20_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for row in vectors:
        append_vector(path, row)
    stored = read_vectors(path)
    queries = stored[:200] + 0.3 * rng.standard_normal((200, 32)).astype(np.float32)
    exact = nearest(path, stored, queries, 10, "exact")
    approx = nearest(path, stored, queries, 10, "ann")
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.rows, exact.rows)])
    assert approx.method == "ann" and recall >= 0.99, recall
    found = approx.rows[approx.rows == exact.rows]
    assert np.allclose(approx.scores[approx.rows == exact.rows],
                       exact.scores[approx.rows == exact.rows], atol=1e-5) and found.size
    saved = Path(f"{path}.usearch")
    built = saved.stat().st_mtime_ns
    ann_index(path, stored)  # the same vectors: the saved index is read, not rebuilt
    assert saved.stat().st_mtime_ns == built
    append_vector(path, vectors[0])  # the vectors changed: built again, with the new row
    grown = read_vectors(path)
    again = nearest(path, grown, grown[-1:], 2, "ann")
    assert saved.stat().st_mtime_ns != built and set(again.rows[0]) == {0, 20_000}


def test_parquet_holds_each_records_vector(scene_run, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "run"
    done = run_cli("predict", "embed", str(scene_run / "scene1.png"), str(scene_run / "nope.png"),
                   "-m", "shapes_classifier", "--out", str(out), "--quiet", "--backend", "torch",
                   "--parquet", "--allow-failures")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    vectors = np.load(out / "embeddings.npy")
    ok = next(r for r in table if r["error"] is None)
    assert np.allclose(ok["embedding"], vectors[ok["row"]])
    assert next(r for r in table if r["error"] is not None)["embedding"] is None


def test_duplicates_finds_every_planted_copy_and_nothing_else(tmp_path):
    """Unseen shapes scenes, eight of them copied three ways (re-encoded, resized, cropped
    5 %): at the default threshold, with the bundled embedding model, the planted pairs are
    the pairs found, and each original with its copies is one group."""
    from torchinfer.datasets.shapes_duplicates import write_duplicates

    root = write_duplicates(tmp_path / "scenes", 60, seed=424_242, planted=8)
    out = tmp_path / "run"
    done = run_cli("predict", "embed", str(root), "-m", "shapes_embed", "--out", str(out),
                   "--quiet")
    assert done.returncode == 0, done.stderr
    done = run_cli("duplicates", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    found = {tuple(sorted((Path(p["a"]).name, Path(p["b"]).name)))
             for p in map(json.loads, (out / "duplicates" / "pairs.jsonl").read_text().splitlines())}
    planted = {tuple(sorted(p)) for p in json.loads((root / "planted.json").read_text())["pairs"]}
    assert found == planted
    assert summary["groups"] == 8 and summary["largest_group"] == 4
    groups = [json.loads(x) for x in (out / "duplicates" / "groups.jsonl").read_text().splitlines()]
    for group in groups:
        assert len({Path(s).name.split(".")[0] for s in group["sources"]}) == 1
        with Image.open(group["sheet"]) as sheet:
            assert sheet.size == (4 * 160, 160 + 14)
