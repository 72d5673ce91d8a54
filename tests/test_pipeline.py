"""How a stream shares the cores: the plan's arithmetic, the plan a CPU stream measures, thread
counts set for the model while decoding overlaps (and given back), answers unchanged."""

from __future__ import annotations

import pytest
import torch

import torchinfer as ti
from torchinfer.runner.plan import PROBE_FULL, PROBE_SPLIT, PipelinePlan, choose, fixed_plan, split_to_try


def test_split_tried_where_linear_scaling_says_it_may_pay():
    # measured mobilenet_v2 costs on 2 cores: decode 4.0 ms/img; the model 2.3 (TorchScript bf16)
    assert split_to_try(4.0, 2.3, cores=2) == 1
    # resnet50-like: the model dominates, halving its threads cannot pay
    assert split_to_try(4.0, 15.0, cores=2) == 0
    assert split_to_try(4.0, 1.0, cores=1) == 0
    # decoding 4x the model's cost on 16 cores: several decode threads
    assert 2 <= split_to_try(8.0, 2.0, cores=16) <= 8


def test_choice_follows_the_measured_costs():
    # measured per image: in turn 6.3 ms, overlapped 4.0 -> overlapped
    plan = choose(6.3, 2, split=1, overlapped_ms=4.0)
    assert (plan.decode_workers, plan.model_threads, plan.overlapped) == (1, 1, True)
    assert plan.reason == "overlapped, 1 decode + 1 model threads (4.00 ms/img; in turn 6.30)"
    # eager fp32 mobilenet_v2: one thread of it is too slow to pay for the decode core
    slower = choose(8.6, 2, split=1, overlapped_ms=10.6)
    # in turn: a batch per core decoded at once, then the model on every core
    assert (slower.decode_workers, slower.model_threads, slower.overlapped) == (2, None, False)
    # within the noise of a few batches: in turn
    assert not choose(6.0, 2, split=1, overlapped_ms=5.9).overlapped
    assert not choose(19.0, 2, detail="no split tried").overlapped


def test_fixed_plans(monkeypatch):
    monkeypatch.setattr("torchinfer.runner.plan.usable_cpus", lambda: 4)
    assert fixed_plan(torch.device("cpu"), None) is None  # measured by the first batches
    assert fixed_plan(torch.device("cpu"), 0).decode_workers == 0  # on the calling thread
    given = fixed_plan(torch.device("cpu"), 1)
    assert given.overlapped and given.model_threads == 3  # the model gets the rest
    assert fixed_plan(torch.device("cuda"), None).decode_workers == 3
    assert fixed_plan(torch.device("cuda"), None).overlapped
    monkeypatch.setattr("torchinfer.runner.plan.usable_cpus", lambda: 1)
    assert fixed_plan(torch.device("cpu"), None).decode_workers == 0


@pytest.fixture
def inputs(photo_paths):
    return [str(photo_paths[i % len(photo_paths)]) for i in range(4 * (PROBE_FULL + PROBE_SPLIT + 2))]


def test_cpu_stream_measures_its_plan_and_keeps_answers(tiny_classifier_weights, inputs,
                                                        monkeypatch):
    _, path = tiny_classifier_weights
    monkeypatch.setattr("torchinfer.runner.streamer.usable_cpus", lambda: 2)
    monkeypatch.setattr("torchinfer.runner.plan.usable_cpus", lambda: 2)
    measured = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4)
    assert measured.pipeline is None  # decided by the first batches
    reference = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4,
                        decode_workers=0)
    results = list(measured.stream(inputs))
    assert measured.pipeline is not None and "ms/img" in measured.pipeline.reason
    assert [r.top1.index for r in results] == [r.top1.index for r in reference.stream(inputs)]
    assert all(set(r.speed) == {"preprocess", "inference", "postprocess", "wait"}
               for r in results)


def test_a_short_stream_decides_nothing(tiny_classifier_weights, photo_paths):
    _, path = tiny_classifier_weights
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4)
    if clf.pipeline is not None:
        pytest.skip("one usable core: nothing to decide")
    assert len(list(clf.stream([str(p) for p in photo_paths[:4]]))) == 4
    assert clf.pipeline is None


def test_overlapped_torch_model_gets_the_other_cores_then_gives_them_back(
        tiny_classifier_weights, inputs):
    _, path = tiny_classifier_weights
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4)
    clf.pipeline = PipelinePlan(1, 1, "test", overlapped=True)
    before = torch.get_num_threads()
    seen = []
    forward = clf.forward

    def spy(tensor, batch=None):
        seen.append(torch.get_num_threads())
        return forward(tensor, batch)

    clf.forward = spy
    results = list(clf.stream(inputs))
    assert len(results) == len(inputs) and all(r.ok for r in results)
    assert set(seen) == {1} and torch.get_num_threads() == before
    assert sum(r.speed["wait"] for r in results) >= 0.0


def test_overlapped_onnxruntime_session_is_rebuilt_with_its_share(tiny_classifier_weights,
                                                                  inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path / "cache"))
    _, path = tiny_classifier_weights
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4,
                  backend="onnxruntime")
    in_turn = [r.top1.index for r in clf.stream(inputs[:8])]
    clf.pipeline = PipelinePlan(1, 1, "test", overlapped=True)
    overlapped = [r.top1.index for r in clf.stream(inputs[:8])]
    assert clf.module.session.get_session_options().intra_op_num_threads == 1
    assert overlapped == in_turn


def test_failed_first_batches_lose_nothing(tiny_classifier_weights, photo_paths, tmp_path):
    """Bad files first: the probe cannot time them, the run goes on in turn with every input."""
    _, path = tiny_classifier_weights
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    inputs = [str(broken)] * 12 + [str(p) for p in photo_paths] * 2
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4)
    results = list(clf.stream(inputs))
    assert [r.source for r in results] == inputs
    assert [r.ok for r in results] == [False] * 12 + [True] * (len(inputs) - 12)


def test_memory_stays_flat_over_a_long_stream(tiny_classifier_weights, photo_paths):
    """600 images through the measured plan and the decode pool: what the process holds after
    100 images is what it holds after 600 (results are consumed, nothing accumulates)."""
    psutil = pytest.importorskip("psutil")
    _, path = tiny_classifier_weights
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=4)
    process = psutil.Process()
    endless = (str(photo_paths[i % len(photo_paths)]) for i in range(600))
    rss = {}
    for i, result in enumerate(clf.stream(endless), 1):
        assert result.ok
        if i in (100, 600):
            rss[i] = process.memory_info().rss / 2**20
    assert rss[600] - rss[100] < 40, rss  # MiB; one batch of these photos is ~10 MiB


def test_in_turn_decodes_a_batch_per_core_at_once(tiny_classifier_weights, photo_paths):
    """In turn with 3 decode threads: groups of 3 batches decoded at once, then run; the same
    answers, in input order, with a partial group at the end and a failure inside one."""
    _, path = tiny_classifier_weights
    inputs = [str(photo_paths[i % len(photo_paths)]) for i in range(22)] + ["missing.jpg"]
    serial = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=2,
                     decode_workers=0)
    grouped = ti.load("classify", "mobilenet_v3_small", path, device="cpu", batch_size=2)
    grouped.pipeline = PipelinePlan(3, None, "test")
    a, b = list(serial.stream(inputs)), list(grouped.stream(inputs))
    assert [r.source for r in b] == inputs and not b[-1].ok
    assert [r.ok and r.top1.index for r in a] == [r.ok and r.top1.index for r in b]
    assert all(r.speed["wait"] > 0 for r in b if r.ok)  # the model waited for each group
