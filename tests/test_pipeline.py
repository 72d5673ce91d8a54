"""How a stream shares the cores: the plan's arithmetic, the plan a CPU stream measures, thread
counts set for the model while decoding overlaps (and given back), answers unchanged."""

from __future__ import annotations

import pytest
import torch

import torchinfer as ti
from torchinfer.pipeline import PROBE_BATCHES, PipelinePlan, fixed_plan, plan_from_timings


def test_plan_overlaps_when_decoding_and_the_model_cost_alike():
    # the measured mobilenet_v2 case: decode 4.7 ms, bf16 model 1.9 ms/img on 2 cores
    plan = plan_from_timings(4.7, 1.9, cores=2)
    assert (plan.decode_workers, plan.model_threads) == (1, 1)
    assert "overlapped" in plan.reason and "4.70" in plan.reason


def test_plan_stays_in_turn_when_the_model_dominates_or_there_is_one_core():
    # resnet50: giving a core to decoding would halve the model's threads for little
    assert plan_from_timings(4.7, 15.0, cores=2).decode_workers == 0
    # eager fp32 mobilenet_v2: overlapped is predicted no better than in turn
    assert plan_from_timings(4.7, 4.65, cores=2).decode_workers == 0
    assert plan_from_timings(4.7, 0.1, cores=1) == PipelinePlan(0, None, plan_from_timings(
        4.7, 0.1, cores=1).reason)


def test_plan_on_many_cores_gives_decoding_what_it_needs():
    # decoding 4x the model's per-image cost on 16 cores: several decode threads
    plan = plan_from_timings(8.0, 2.0, cores=16)
    assert 2 <= plan.decode_workers <= 8 and plan.model_threads == 16 - plan.decode_workers


def test_fixed_plans():
    assert fixed_plan(torch.device("cpu"), None) is None or torch.get_num_threads() == 1
    assert fixed_plan(torch.device("cpu"), 0) == PipelinePlan(0, None, "decode_workers given")
    given = fixed_plan(torch.device("cpu"), 1)
    assert given.decode_workers == 1 and given.model_threads >= 1


@pytest.fixture
def inputs(photo_paths):
    return [str(photo_paths[i % len(photo_paths)]) for i in range(4 * (PROBE_BATCHES + 2))]


def test_cpu_stream_measures_its_plan_and_keeps_answers(tiny_classifier_weights, inputs,
                                                        monkeypatch):
    _, path = tiny_classifier_weights
    monkeypatch.setattr("torchinfer.pipeline.usable_cpus", lambda: 2)
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
    clf.pipeline = PipelinePlan(1, 1, "test")
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
    clf.pipeline = PipelinePlan(1, 1, "test")
    overlapped = [r.top1.index for r in clf.stream(inputs[:8])]
    assert clf.module.session.get_session_options().intra_op_num_threads == 1
    assert overlapped == in_turn
