"""Depth estimation: transformers' pipeline as the oracle for DPT, Depth Anything and GLPN folders,
a user's own module, and what ``predict depth`` writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchinfer as ti
from torchinfer.manifests import task_manifest

pytest.importorskip("transformers")
from hub_fixtures import photos, save_hf_folder  # noqa: E402

EXACT = dict(device="cpu", backend="torch", precision="fp32", exact_decode=True)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    return photos(tmp_path_factory.mktemp("depth_photos"))[:4]


@pytest.fixture(scope="module", params=["dpt", "depth_anything", "glpn"])
def depth_folder(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, save_hf_folder(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def anything_folder(tmp_path_factory) -> Path:
    return save_hf_folder(tmp_path_factory.mktemp("anything"), "depth_anything")


def test_depth_equals_the_transformers_pipeline_at_the_original_size(depth_folder, pictures):
    """The processor's resize (Depth Anything: the aspect ratio kept in multiples of 14), the
    model and the bicubic resize back, against ``pipeline("depth-estimation")``. GLPN runs at
    the image's own size floored to multiples of 32 and says its depth is metric."""
    import transformers

    kind, folder = depth_folder
    predictor = ti.load("depth", str(folder), **EXACT)
    pipe = transformers.pipeline("depth-estimation", model=str(folder), device="cpu")
    results = list(predictor.stream([str(p) for p in pictures], batch_size=3))
    for path, result in zip(pictures, results):
        with Image.open(path) as img:
            expected = pipe(img.convert("RGB"))["predicted_depth"].numpy()
            size = img.size
        assert result.ok and result.depth.shape == expected.shape == (size[1], size[0])
        assert np.abs(result.depth - expected).max() <= 1e-3 * np.abs(expected).max(), path.name
        assert result.kind == ("metric" if kind == "glpn" else "relative")
        assert result.depth.std() > 1e-3  # the calibrated maps vary: the comparison means something


class RedIsNear(torch.nn.Module):
    """A "depth model" whose answer is known: the normalised red channel, (N, H, W) or
    (N, 1, H, W)."""

    def __init__(self, keep_channel: bool):
        super().__init__()
        self.keep_channel = keep_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] if self.keep_channel else x[:, 0]


@pytest.mark.parametrize("keep_channel", [True, False])
def test_a_users_module_gives_a_map_per_image_at_its_size(keep_channel):
    red = Image.new("RGB", (96, 64), (200, 30, 30))
    half = np.zeros((64, 96, 3), np.uint8)
    half[:, 48:] = (255, 0, 0)  # the right half red
    predictor = ti.load("depth", RedIsNear(keep_channel), device="cpu", backend="torch",
                        depth_kind="metric", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    flat, split = predictor([red, Image.fromarray(half)])
    assert flat.depth.shape == (64, 96) and flat.kind == "metric"
    assert np.allclose(flat.depth, 200 / 255, atol=1e-3)
    assert split.depth[:, :40].max() < 0.05 and split.depth[:, 56:].min() > 0.95
    record = flat.to_dict()
    assert record["size"] == [64, 96] and record["kind"] == "metric"
    assert abs(record["median"] - 200 / 255) < 1e-3


def test_predict_depth_writes_maps_that_read_back(anything_folder, pictures, tmp_path):
    folder = anything_folder
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "depth",
                           *map(str, pictures), "-m", str(folder), "--out", str(out), "--quiet",
                           "--backend", "torch", "--precision", "fp32", "--exact-decode",
                           "--save-vis"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    predictor = ti.load("depth", str(folder), **EXACT)
    for path, record in zip(pictures, records):
        depth = predictor(str(path)).depth
        png = np.asarray(Image.open(record["files"]["depth"]), dtype=np.float64)
        scale, offset = record["depth_png"]["scale"], record["depth_png"]["offset"]
        assert png.shape == depth.shape
        assert np.abs(png * scale + offset - depth).max() <= scale / 2 + 1e-5
        assert record["min"] <= record["median"] <= record["max"]
        assert abs(record["max"] - float(depth.max())) < 1e-5
        with Image.open(record["files"]["vis"]) as vis:
            assert vis.size == (depth.shape[1], depth.shape[0])
    again = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "depth",
                            str(pictures[0]), "-m", str(folder), "--out", str(tmp_path / "npy"),
                            "--quiet", "--backend", "torch", "--depth-format", "npy"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    record = json.loads((tmp_path / "npy" / "predictions.jsonl").read_text())
    saved = np.load(record["files"]["depth"])
    assert saved.dtype == np.float32 and saved.shape == tuple(record["size"])


def test_depth_options_are_checked_in_one_line(pictures):
    done = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "depth",
                           str(pictures[0]), "-m", "resnet18", "--depth-kind", "far"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "use one of relative, metric" in done.stderr
    assert done.stderr.strip().count("\n") <= 3  # typer's usage line, the hint, the message


def test_the_oip_outputs_of_depth_maps():
    from torchinfer.manifests.depth import Depth

    maps = [Depth(source="a", depth=np.ones((2, 3), np.float32)),
            Depth(source="b", depth=np.full((3, 2), 2.0, np.float32))]
    tensors = task_manifest("depth").encode(maps)
    datatype, shape, data = tensors["depth"]
    assert (datatype, shape) == ("FP32", [2, 3, 3])
    grid = np.array(data, np.float32).reshape(shape)
    assert grid[0, :2, :3].min() == 1 and grid[0, 2].max() == 0 and grid[1, :3, :2].min() == 2
    assert tensors["size"] == ("INT64", [2, 2], [2, 3, 3, 2])


# --- eval depth ----------------------------------------------------------------------------------

def _nyu_folder(root: Path, truths: dict[str, np.ndarray], colours: dict[str, tuple[int, int, int]],
                npy: tuple[str, ...] = ()) -> Path:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    for name, truth in truths.items():
        Image.new("RGB", (truth.shape[1], truth.shape[0]), colours[name]).save(root / "rgb" / f"{name}.png")
        if name in npy:
            np.save(root / "depth" / f"{name}.npy", truth)
        else:
            Image.fromarray(np.round(truth * 1000).astype(np.uint16)).save(root / "depth" / f"{name}.png")
    return root


def _by_hand(pred: np.ndarray, truth: np.ndarray, align: bool) -> dict[str, float]:
    """The standard metrics, written out: valid pixels in (0.001, 10] m, an optional
    least-squares scale and shift (closed form), predictions clipped to the range."""
    valid = (truth > 1e-3) & (truth <= 10.0)
    p, t = pred[valid].astype(np.float64), truth[valid]
    if align:
        var = ((p - p.mean()) ** 2).sum()
        scale = ((p - p.mean()) * (t - t.mean())).sum() / var if var > 0 else 0.0
        p = scale * p + (t.mean() - scale * p.mean())
    p = np.clip(p, 1e-3, 10.0)
    ratio = np.maximum(p / t, t / p)
    return {"abs_rel": float(np.mean(np.abs(p - t) / t)), "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
            "delta1": float(np.mean(ratio < 1.25)), "delta2": float(np.mean(ratio < 1.5625)),
            "delta3": float(np.mean(ratio < 1.953125))}


def test_eval_depth_agrees_with_the_metrics_written_out(tmp_path):
    rng = np.random.default_rng(0)
    truths = {"a": rng.uniform(0.5, 4.0, (24, 32)), "b": rng.uniform(0.3, 12.0, (20, 30))}
    truths["a"][:3] = 0.0  # no depth there: not scored
    colours = {"a": (153, 0, 0), "b": (51, 0, 0)}  # the model answers red / 255: 0.6 and 0.2
    data = _nyu_folder(tmp_path / "nyu", truths, colours, npy=("b",))
    common = dict(device="cpu", backend="torch", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    metric = ti.evaluate("depth", RedIsNear(True), data, depth_kind="metric", **common)
    expected = [_by_hand(np.full(t.shape, c[0] / 255), t, align=False)
                for t, c in zip(truths.values(), colours.values())]
    for key in ("abs_rel", "rmse", "delta1", "delta2", "delta3"):
        assert metric.metrics[key] == pytest.approx(np.mean([e[key] for e in expected]), rel=1e-5), key
    assert metric.alignment == "none" and metric.images == 2 and not metric.failures
    assert metric.pixels == int(sum(((t > 1e-3) & (t <= 10)).sum() for t in truths.values()))

    # a relative model is scored after least squares, per image, on the maps it gave
    gradient = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    Image.fromarray(np.stack([gradient, gradient * 0, gradient * 0], -1)).save(data / "rgb" / "a.png")
    relative = ti.evaluate("depth", RedIsNear(True), data, **common)
    predictor = ti.load("depth", RedIsNear(True), **common)
    maps = [predictor(str(data / "rgb" / f"{n}.png")).depth for n in truths]
    expected = [_by_hand(m, t, align=True) for m, t in zip(maps, truths.values())]
    assert relative.alignment.startswith("scale and shift fitted")
    for key in ("abs_rel", "rmse", "delta1"):
        assert relative.metrics[key] == pytest.approx(np.mean([e[key] for e in expected]), rel=1e-5), key


def test_eval_depth_from_the_command_line(tmp_path, anything_folder):
    truths = {"a": np.linspace(1.0, 3.0, 48 * 64).reshape(48, 64)}
    data = _nyu_folder(tmp_path / "nyu", truths, {"a": (100, 0, 0)})
    out = tmp_path / "report"
    scored = subprocess.run([sys.executable, "-m", "torchinfer", "eval", "depth",
                             str(anything_folder), "--data", str(data), "--json", "--out",
                             str(out), "--backend", "torch", "--max-depth", "5"],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report == json.loads((out / "eval.json").read_text())
    assert report["task"] == "depth" and report["evaluated"] == 1
    assert 0 <= report["metrics"]["delta1"] <= 1 and report["metrics"]["abs_rel"] >= 0
    assert report["metrics"]["depth_range_m"] == [0.001, 5.0]
    assert report["metrics"]["alignment"].startswith("scale and shift")  # a relative model
    done = subprocess.run([sys.executable, "-m", "torchinfer", "eval", "depth", "resnet18",
                           "--data", str(data), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    # resnet18 is a classifier: refused in one line, before any image is read
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    (data / "depth" / "a.png").unlink()
    broken = subprocess.run([sys.executable, "-m", "torchinfer", "eval", "depth", "resnet18",
                             "--data", str(data)], capture_output=True, text=True, timeout=300)
    assert broken.returncode == 2 and "has no depth/a.png or .npy" in broken.stderr


# --- the shapes scenes with depth, and the bundled model trained on them ------------------------

def test_depth_scenes_are_exact_by_construction(tmp_path):
    from torchinfer.datasets.shapes import scene_rng
    from torchinfer.datasets.shapes_depth import SHAPE_DEPTH, generate_depth_scene, write_depth_scenes

    for i in range(6):
        scene = generate_depth_scene(scene_rng(5, i), (96, 128))
        depth = scene.depth
        assert depth.shape == (96, 128) and scene.image.size == (128, 96)
        shapes = (depth >= SHAPE_DEPTH[0]) & (depth <= SHAPE_DEPTH[1])
        assert len(np.unique(depth[shapes])) <= len(scene.classes)  # one flat depth per shape
        # everything else is one plane: its values are an exact linear function of x and y
        ys, xs = np.nonzero(~shapes)
        a = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs)], 1).astype(np.float64)
        coef, *_ = np.linalg.lstsq(a, depth[~shapes].astype(np.float64), rcond=None)
        assert np.abs(a @ coef - depth[~shapes]).max() < 1e-4
        assert depth[~shapes].min() > SHAPE_DEPTH[1]  # the plane is behind every shape
    root = write_depth_scenes(tmp_path / "nyu", 2, seed=5)
    again = generate_depth_scene(scene_rng(5, 1), 256).depth
    png = np.asarray(Image.open(root / "depth" / "000001.png"), dtype=np.float64) / 1000
    assert np.abs(png - again).max() <= 0.0005 + 1e-6


def test_the_bundled_depth_model_on_unseen_scenes(tmp_path):
    """scripts/train_shapes.py trained it on seed 4; these are seed 20261207's."""
    from torchinfer.datasets.shapes_depth import write_depth_scenes

    data = write_depth_scenes(tmp_path / "nyu", 24, seed=20_261_207)
    report = ti.evaluate("depth", "shapes_depth", data, device="cpu")
    assert report.alignment == "none" and report.evaluated == 24  # metric: scored as it is
    assert report.metrics["abs_rel"] <= 0.10 and report.metrics["delta1"] >= 0.90, report.metrics


class ShapeAndDepth(torch.nn.Module):
    """A two-head "model" whose answers are known: the mean of each channel as class logits,
    and the red channel as the depth map, over the whole letterboxed input."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"shape": x.mean(dim=(2, 3)) * 10, "depth": x[:, :1]}


def test_depth_is_a_head_of_a_multi_head_model():
    heads = [{"name": "shape", "task": "classify", "output": "shape", "labels": ["r", "g", "b"]},
             {"name": "far", "task": "depth", "output": "depth",
              "options": {"depth_kind": "metric"}}]
    predictor = ti.load("multi", ShapeAndDepth(), heads=heads, input_size=128, device="cpu",
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    result = predictor(Image.new("RGB", (96, 64), (200, 30, 30)))
    far = result.heads["far"]
    assert far.depth.shape == (64, 96) and far.kind == "metric"  # the letterbox's padding cut away
    assert np.abs(far.depth - 200 / 255).max() < 1e-3
    assert result.heads["shape"].top1.label == "r"
    assert result.to_dict()["heads"]["far"]["median"] == pytest.approx(200 / 255, abs=1e-3)
    with pytest.raises(ti.TorchinferError, match="needs a 3 or 4-D output"):
        ti.load("multi", ShapeAndDepth(), input_size=128, device="cpu",
                heads=[{"name": "far", "task": "depth", "output": "shape"}])


def test_a_depth_heads_kind_from_the_command_line(tmp_path):
    """``predict multi`` gives a depth head its options as any head's: ``--head-option
    HEAD.depth_kind=metric`` (or ``:depth_kind=metric`` in ``--head``)."""
    (tmp_path / "two_heads.py").write_text(
        "import torch\n\n"
        "class ShapeAndDepth(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return {'shape': x.mean(dim=(2, 3)) * 10, 'depth': x[:, :1]}\n")
    Image.new("RGB", (96, 64), (200, 30, 30)).save(tmp_path / "red.png")
    (tmp_path / "rgb.txt").write_text("r\ng\nb\n")
    common = [sys.executable, "-m", "torchinfer", "predict", "multi", str(tmp_path / "red.png"),
              "-m", "two_heads:ShapeAndDepth", "--input-size", "128", "--mean", "0,0,0",
              "--std", "1,1,1", "--quiet",
              "--head", f"shape=classify:{tmp_path / 'rgb.txt'}:output=shape"]
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    kinds = {}
    for name, far in {"given": ["--head", "far=depth:output=depth",
                                "--head-option", "far.depth_kind=metric"],
                      "inline": ["--head", "far=depth:output=depth:depth_kind=metric"],
                      "default": ["--head", "far=depth:output=depth"]}.items():
        done = subprocess.run([*common, *far, "--out", str(tmp_path / name)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        record = json.loads((tmp_path / name / "predictions.jsonl").read_text())
        kinds[name] = record["heads"]["far"]["kind"]
        assert record["heads"]["far"]["median"] == pytest.approx(200 / 255, abs=1e-3)
    assert kinds == {"given": "metric", "inline": "metric", "default": "relative"}
