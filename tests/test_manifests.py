"""Task manifests: read without torch, options checked once for every caller, and a
third-party task added through the ``torchinfer.tasks`` entry point with no edit here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchinfer.errors import OptionError, TorchinferError
from torchinfer.manifests import (
    TaskManifest,
    TaskOption,
    accepted_options,
    forget_plugins,
    register_task,
    task_manifest,
    task_names,
)


def test_the_manifests_are_read_without_torch():
    code = ("import sys; from torchinfer.manifests import task_names, task_manifest;"
            "m = task_manifest('detect'); print(task_names(), m.request_options({'conf': '0.5'}),"
            "'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["('classify',", "'segment',", "'detect',", "'multi',",
                                   "'depth',", "'embed')", "{'conf':", "0.5}", "False"]


@pytest.mark.parametrize("kind, given, expected", [
    ("int", "3", 3), ("int", 3.0, 3), ("float", "0.5", 0.5), ("bool", "true", True),
    ("bool", False, False), ("ids", "0,2", (0, 2)), ("ids", [1], (1,)), ("ids", "", None),
    ("str", "a", "a"),
])
def test_an_option_types_text_and_values_alike(kind, given, expected):
    option = TaskOption(name="x", type=kind, default=None, help="")
    assert option.check(given) == expected


@pytest.mark.parametrize("option, given, message", [
    (TaskOption(name="k", type="int", default=1, minimum=1, help=""), True, "k=True: expected"),
    (TaskOption(name="k", type="int", default=1, minimum=1, help=""), 2.5, "expected an integer"),
    (TaskOption(name="k", type="int", default=1, minimum=1, help=""), 0, "k must be >= 1, got 0"),
    (TaskOption(name="p", type="float", default=0.5, minimum=0, maximum=1, help=""), "nan",
     "expected a number"),
    (TaskOption(name="p", type="float", default=0.5, minimum=0, maximum=1, help=""), 2,
     "p must be in [0, 1], got 2"),
    (TaskOption(name="c", type="ids", default=None, minimum=0, help=""), "1,-2",
     "c must be >= 0"),
    (TaskOption(name="m", type="str", default="a", choices=("a", "b"), help=""), "z",
     "use one of a, b"),
])
def test_an_option_refuses_in_one_line(option, given, message):
    with pytest.raises(OptionError, match=None) as err:
        option.check(given)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_request_sets_only_the_options_marked_per_request():
    detect = task_manifest("detect")
    assert detect.request_options({"conf": "0.4", "classes": "1"}) == {"conf": 0.4, "classes": (1,)}
    with pytest.raises(OptionError, match="unknown option 'decoder'"):
        detect.request_options({"decoder": "yolov8"})
    with pytest.raises(OptionError, match="takes no options"):
        task_manifest("segment").request_options({"top_k": 3})


def test_a_multi_head_model_takes_its_heads_options():
    multi = accepted_options("multi")
    assert {"heads", "head_options", "top_k", "conf", "iou", "max_det", "classes"} <= set(multi)
    assert set(accepted_options("classify")) == {"top_k", "multi_label"}


def test_register_task_refuses_a_name_taken():
    clash = TaskManifest(name="classify", summary="", implementation="x:y")
    with pytest.raises(TorchinferError, match="registered already"):
        register_task(clash)
    try:
        mine = register_task(TaskManifest(name="mine", summary="Mine.", implementation="x:y"))
        assert task_names()[-1] == "mine" and task_manifest("mine") is mine
    finally:
        forget_plugins()
    assert "mine" not in task_names()


# --- a task from another package ------------------------------------------------------------

PLUGIN = '''
"""A third-party task in one module: the raw scores of a classifier, as a vector."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from torchinfer.manifests import OutputTensor, TaskManifest, TaskOption
from torchinfer.models import PreprocessConfig
from torchinfer.results import Result
from torchinfer.tasks import TaskImplementation
from torchinfer.tasks.classify import ClassificationPredictor


@dataclass(frozen=True, kw_only=True)
class Scores(Result):
    values: tuple[float, ...] = ()

    def to_dict(self):
        return {**super().to_dict(), "values": [round(v, 4) for v in self.values]}


class ScoresPredictor(ClassificationPredictor):
    task = "scores"

    def __init__(self, model, *, scale: float = 1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.scale = scale

    def postprocess(self, raw, batch, *, scale=None):  # a request's scale, for its call only
        rows = (raw.float() * (self.scale if scale is None else scale)).tolist()
        return [Scores(source=s, values=tuple(r)) for s, r in zip(batch.sources, rows)]

    def failed(self, source, reason):
        return Scores(source=source, error=reason)


def encode(results):
    rows = [r.values for r in results]
    return {"values": ("FP32", [len(rows), len(rows[0])], [v for r in rows for v in r])}


def make_model():
    """A tiny model of the package's own: four scores per image."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())


def unscored(*args, **kwargs):
    raise NotImplementedError("scores has no labelled data")


TASK = TaskImplementation(
    result=Scores, predictors=(ScoresPredictor,), preprocess=PreprocessConfig.default(),
    output_name="scores", read_dataset=unscored, evaluator=unscored,
    describe=lambda r: (f"{max(r.values):.3f}",), draw=lambda image, r: image)

MANIFEST = TaskManifest(
    name="scores", summary="The raw scores of a classifier.",
    implementation="scores_task:TASK",
    options=(TaskOption(name="scale", type="float", default=1.0, minimum=0.0,
                        per_request=True, help="Multiply the scores."),),
    columns=("max",), outputs=(OutputTensor("values", "FP32", (-1, -1)),), encode=encode)
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    return install_plugin(tmp_path / "site")


def install_plugin(site: Path) -> Path:
    """A package installed the way pip leaves one: its module and a dist-info whose
    entry_points.txt names the manifest."""
    site.mkdir()
    (site / "scores_task.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "scores_task-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scores-task\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[torchinfer.tasks]\nscores = scores_task:MANIFEST\n")
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_a_plugin_task_runs_from_the_command_line(plugin_path, tmp_path, photo_paths):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "scores",
                           *map(str, photo_paths[:3]), "-m", "scores_task:make_model", "--trust-code", "--scale", "2",
                           "--out", str(out), "--quiet", "--device", "cpu", "--backend", "torch"],
                          capture_output=True, text=True, env=_env(plugin_path), timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["values"]) == 4 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "scores"
    helped = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "--help"],
                            capture_output=True, text=True, env=_env(plugin_path), timeout=120)
    assert "The raw scores of a classifier." in helped.stdout
    wrong = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "scores",
                            str(photo_paths[0]), "-m", "scores_task:make_model", "--top-k", "2"],
                           capture_output=True, text=True, env=_env(plugin_path), timeout=120)
    assert wrong.returncode == 2 and "--top-k" in wrong.stderr


def test_a_plugin_task_runs_in_the_library_with_its_scale_checked(plugin_path, photo_paths,
                                                                 monkeypatch):
    import torchinfer as ti

    monkeypatch.syspath_prepend(str(plugin_path))
    forget_plugins()
    try:
        assert "scores" in task_names()
        p = ti.load("scores", "scores_task:make_model", device="cpu", scale=0.5, trust_code=True)
        plain = ti.load("scores", "scores_task:make_model", device="cpu", trust_code=True)
        half, full = p(str(photo_paths[0])), plain(str(photo_paths[0]))
        assert half.values == pytest.approx(tuple(v / 2 for v in full.values), abs=1e-5)
        with pytest.raises(OptionError, match="scale must be >= 0"):
            task_manifest("scores").request_options({"scale": -1})
    finally:
        forget_plugins()
        sys.modules.pop("scores_task", None)


def test_a_plugin_task_runs_on_ray_as_it_runs_here(plugin_path, tmp_path, photo_paths):
    """``--engine ray``: the workers of a private local Ray import the plugin from the same
    path and give the records a local run gives."""
    pytest.importorskip("ray")
    common = [*map(str, photo_paths[:3]), "-m", "scores_task:make_model", "--trust-code",
              "--backend", "torch", "--quiet", "--device", "cpu"]
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--engine", "ray", "--workers", "1"] if engine == "ray" else []
        done = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "scores", *common,
                               "--out", str(out), *extra],
                              capture_output=True, text=True, env=_env(plugin_path), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[engine] = {r["source"]: r["values"] for r in map(
            json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert runs["ray"].keys() == runs["local"].keys() and len(runs["ray"]) == 3
    for source, values in runs["local"].items():
        assert runs["ray"][source] == pytest.approx(values, abs=2e-4)


def _bad_task():
    from torchinfer.models import PreprocessConfig
    from torchinfer.results import Classification
    from torchinfer.tasks import ClassificationPredictor, TaskImplementation

    return TaskImplementation(result=Classification, predictors=(ClassificationPredictor,),
                              preprocess=PreprocessConfig.default(), output_name="x",
                              read_dataset=print, evaluator=print, describe=str,
                              draw=lambda image, r: image)


BAD_TASK = _bad_task()  # the test below names it by its import path


def test_a_per_request_option_the_predictor_does_not_take_is_refused():
    from torchinfer.tasks.registry import task_spec

    register_task(TaskManifest(
        name="badscores", summary="", implementation="test_manifests:BAD_TASK",
        options=(TaskOption(name="gamma", type="float", default=1.0, per_request=True,
                            help=""),)))
    try:
        with pytest.raises(TorchinferError, match=r"ClassificationPredictor.postprocess does "
                                                  r"not take its per-request option\(s\) gamma"):
            task_spec("badscores")
    finally:
        forget_plugins()
