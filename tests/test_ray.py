"""Batch inference on Ray Data (torchinfer.distributed) on a local Ray: the records of a local
run, failures included; resuming an interrupted job; a worker killed mid-job; the version and
small-machine traps (ray-project/ray#44687, #60124, #62746)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'torchinfer[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")

import psutil  # noqa: E402  (Ray's own dependency)
from typer.testing import CliRunner  # noqa: E402

import torchinfer as ti  # noqa: E402
from torchinfer import distributed  # noqa: E402
from torchinfer.cli.app import app  # noqa: E402
from torchinfer.datasets.shapes import write_classification  # noqa: E402
from torchinfer.distributed.cluster import plan_workers  # noqa: E402
from torchinfer.distributed.compat import actor_pool_args, actor_pool_form  # noqa: E402
from torchinfer.distributed.job import _with_stall_timeout  # noqa: E402
from torchinfer.errors import OptionError, TorchinferError  # noqa: E402
from torchinfer.runner.run import run_to_dir  # noqa: E402
from torchinfer.runner.sinks import read_jsonl  # noqa: E402
from torchinfer.runner.streamer import torch_threads  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """A private two-CPU Ray for this module, dashboard off, a small object store."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=150 * 1024**2, _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 shapes images, and files a run records as failures: not an image, empty, truncated,
    and (through a list file) a path that does not exist."""
    root = write_classification(tmp_path_factory.mktemp("shapes") / "images", 24, seed=3,
                                size=64)
    good = next(root.glob("circle/*.png")).read_bytes()
    (root / "not_an_image.png").write_bytes(b"plain text, not a picture")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    return root


def records(out: Path) -> list[dict]:
    """The lines of a run, less their timings (the one field a job and a local run differ in)."""
    lines = read_jsonl(out / "predictions.jsonl")
    for line in lines:
        line.pop("speed")
    return lines


def local_records(sources: list[str], out: Path) -> list[dict]:
    """A local run's records, with the model on one thread as the workers run it (a float sum
    over more threads can move a score's sixth decimal)."""
    predictor = ti.load("classify", "shapes_classifier", decode_workers=0)
    with torch_threads(1):
        run_to_dir(predictor, sources, out)
    return records(out)


def cli(*args: str):
    return CliRunner().invoke(app, ["predict", "classify", *args, "-m", "shapes_classifier",
                                    "--quiet"])


@pytest.mark.timeout(240)
def test_job_records_equal_a_local_run_failures_included(local_ray, images, tmp_path):
    listed = tmp_path / "more.txt"
    listed.write_text(f"{images}\n{tmp_path / 'missing.png'}\n", encoding="utf-8")
    expected = local_records([str(listed)], tmp_path / "local")
    out = tmp_path / "ray"
    result = cli(str(listed), "--out", str(out), "--engine", "ray", "--workers", "2",
                 "--parquet")
    assert result.exit_code == 1, result.output  # inputs failed: recorded, as a local run
    got = records(out)
    assert got == expected
    errors = {Path(r["source"]).name: r["error"] for r in got if "error" in r}
    assert errors == {"not_an_image.png": "not a recognised image format",
                      "empty.jpg": "empty file (0 bytes)",
                      "truncated.png": errors["truncated.png"],
                      "missing.png": "file not found"}
    assert errors["truncated.png"].startswith("corrupt or truncated image")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["total"], summary["failed"]) == (28, 4)
    info = summary["pipeline"]
    assert info["engine"] == "ray" and info["workers"] == 2
    # how many workers ran batches: 2 when the reads keep both busy; on a loaded machine the
    # reads can trickle in slowly enough for one idle worker to take every block
    assert info["workers_used"] in (1, 2)
    assert info["workers"] * info["cpus_per_worker"] <= 1  # a CPU stays free for reading
    import pyarrow.parquet as pq

    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [r["source"] for r in table] == [r["source"] for r in got]
    assert [r["error"] for r in table] == [r.get("error") for r in got]
    assert [r["top1"]["label"] if r["top1"] else None for r in table] == \
        [r["top1"]["label"] if "top1" in r else None for r in got]
    # the same command run locally with --resume keeps every line the job wrote
    result = cli(str(listed), "--out", str(out), "--resume")
    assert result.exit_code == 1, result.output
    resumed = json.loads((out / "summary.json").read_text())
    assert (resumed["resumed"], resumed["total"]) == (24, 28)
    by_source = sorted(expected, key=lambda r: r["source"])  # kept lines come first
    assert sorted(records(out), key=lambda r: r["source"]) == by_source


@pytest.mark.timeout(240)
def test_decoding_in_ray_tasks_gives_the_same_records(local_ray, images, tmp_path):
    """... and a URI is read through pyarrow's filesystems (file:// here, s3:// elsewhere)."""
    expected = local_records([str(images)], tmp_path / "local")
    one = next(images.glob("star/*.png"))
    uris = [one.as_uri(), (images / "gone.png").as_uri()]
    distributed.predict([str(images), *uris], "classify", "shapes_classifier",
                        out=tmp_path / "ray", workers=1, decode="tasks")
    *got, by_uri, gone = records(tmp_path / "ray")
    assert got == expected
    same = next(r for r in expected if r["source"] == str(one))
    assert by_uri["source"] == uris[0] and by_uri["topk"] == same["topk"]
    assert by_uri["file"]["size"] == one.stat().st_size  # stamped: --resume keeps it
    assert gone == {"source": uris[1], "error": "file not found"}


@pytest.mark.timeout(300)
def test_interrupted_job_resumes_with_the_rest(local_ray, images, tmp_path):
    out = tmp_path / "ray"
    seen = []

    def interrupt(result):
        seen.append(result.source)
        if len(seen) == 10:
            raise KeyboardInterrupt  # what Ctrl-C raises in the driver

    job = dict(workers=1, out=out)
    with pytest.raises(KeyboardInterrupt):
        distributed.predict([str(images)], "classify", "shapes_classifier", on_result=interrupt,
                            **job)
    partial = read_jsonl(out / "predictions.jsonl.partial")
    assert [r["source"] for r in partial] == seen
    ran = []
    summary = distributed.predict([str(images)], "classify", "shapes_classifier",
                                  resume=True, on_result=lambda r: ran.append(r.source), **job)
    kept = {r["source"] for r in partial if "error" not in r}
    assert summary.resumed == len(kept) == 7 and summary.total == 27
    assert not kept & set(ran) and len(ran) == 20  # only the rest ran (failures again)
    expected = local_records([str(images)], tmp_path / "local")
    assert sorted(records(out), key=lambda r: r["source"]) == \
        sorted(expected, key=lambda r: r["source"])


def _worker_processes() -> list[psutil.Process]:
    """This test's Ray model workers (children of the Ray this process started)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "PredictorActor" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes(local_ray, images, tmp_path):
    killed = []

    def kill_once(result):
        if not killed:
            workers = _worker_processes()
            assert workers, "no model worker process found"
            os.kill(workers[0].pid, signal.SIGKILL)  # as the kernel's OOM killer would
            killed.append(workers[0].pid)

    expected = local_records([str(images)], tmp_path / "local")
    distributed.predict([str(images)], "classify", "shapes_classifier", out=tmp_path / "ray",
                        workers=1, images_per_task=4, on_result=kill_once)
    assert killed
    assert records(tmp_path / "ray") == expected
    job = json.loads((tmp_path / "ray" / "summary.json").read_text())["pipeline"]
    assert job["rounds"] >= 2 and job["nodes_lost"] == 0  # a new pool went on from there


def test_a_stalled_job_fails_clearly_instead_of_hanging():
    never = threading.Event()

    def stuck():
        yield {"seq": 0}
        never.wait()  # a pool whose last worker died and was not replaced (ray#62746)
        yield {"seq": 1}

    plan = plan_workers(2, 0, 1)
    rows = _with_stall_timeout(stuck(), 1.0, plan)
    assert next(rows) == {"seq": 0}
    t0 = time.perf_counter()
    with pytest.raises(TorchinferError, match="gave no result for 1 s"):
        next(rows)
    assert time.perf_counter() - t0 < 5
    never.set()


@pytest.mark.parametrize(("cpus", "gpus", "workers", "gpus_each"),
                         [(2, 0, None, 0), (2, 0, 2, 0), (2, 0, 5, 0), (1, 0, None, 0),
                          (16, 0, None, 0), (8, 2, None, 1), (8, 1, 2, 0.5), (3, 0, 3, 0)])
def test_the_pool_never_holds_every_cpu(cpus, gpus, workers, gpus_each):
    """Actors reserving every CPU starve the read tasks: the job hangs (ray#44687)."""
    plan = plan_workers(cpus, gpus, workers, gpus_each)
    assert plan.workers * plan.cpus_per_worker <= cpus - min(1, cpus / 2) + 1e-9
    assert plan.cpus_per_worker > 0 and plan.workers >= 1
    assert plan.workers * plan.gpus_per_worker <= gpus + 1e-9


def test_a_pool_that_does_not_fit_is_refused():
    with pytest.raises(TorchinferError, match="need 3 GPUs"):
        plan_workers(8, 2, 3, 1)
    with pytest.raises(OptionError):
        plan_workers(8, 0, 0)


def test_the_actor_pool_is_sized_the_way_each_ray_version_wants():
    assert actor_pool_form((2, 8)) == "compute"
    assert actor_pool_form((2, 9)) == actor_pool_form((2, 50)) == "concurrency"
    assert actor_pool_form((2, 51)) == actor_pool_form((2, 60)) == "compute"
    installed = actor_pool_args(2)
    if actor_pool_form(tuple(map(int, ray.__version__.split(".")[:2]))) == "compute":
        assert installed["compute"].min_size == installed["compute"].max_size == 2
    else:
        assert installed == {"concurrency": 2}


def test_ray_options_need_the_ray_engine(tmp_path):
    result = CliRunner().invoke(app, ["predict", "classify", str(tmp_path), "-m",
                                      "shapes_classifier", "--workers", "2"])
    assert result.exit_code == 2
    assert "--engine ray" in result.output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_command_starts_and_stops_a_private_local_ray(images, tmp_path):
    """No Ray running and no --address: the run starts a local Ray of its own (dashboard off,
    object store capped) and stops it when the run ends."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "classify",
                           str(images), "-m", "shapes_classifier", "--out", str(tmp_path / "o"),
                           "--engine", "ray", "--quiet", "--allow-failures"],
                          capture_output=True, text=True, timeout=280, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["pipeline"]["address"] == "local" and summary["total"] == 27


def test_a_transformers_folder_runs_as_a_job_by_its_path(local_ray, tmp_path):
    pytest.importorskip("transformers")
    from hub_fixtures import photos, save_hf_folder

    folder = save_hf_folder(tmp_path / "vit", "vit")
    pictures = photos(tmp_path / "photos")
    predictor = ti.load("classify", str(folder), decode_workers=0)
    with torch_threads(1):
        run_to_dir(predictor, [str(p) for p in pictures], tmp_path / "local")
    out = tmp_path / "ray"
    result = CliRunner().invoke(app, ["predict", "classify", *map(str, pictures), "-m",
                                      str(folder), "--out", str(out), "--engine", "ray",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert records(out) == records(tmp_path / "local")
    assert json.loads((out / "summary.json").read_text())["model_source"]["source"] == \
        "transformers"
