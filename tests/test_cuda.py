"""The same answers on a CUDA GPU as on the CPU (skipped where there is none): classification,
segmentation, detection, streaming with background decode, and reduced-precision backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchinfer as ti

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_classify_on_cuda_matches_cpu(tiny_classifier_weights, photographs):
    _, path = tiny_classifier_weights
    images = list(photographs.values())
    cpu = ti.load("classify", "mobilenet_v3_small", path, device="cpu", top_k=10)(images)
    gpu_predictor = ti.load("classify", "mobilenet_v3_small", path, device="cuda", top_k=10)
    assert gpu_predictor.batch_size == 32
    gpu = list(gpu_predictor.stream(images * 5, batch_size=3))  # background decode, in order
    assert [r.source for r in gpu[:8]] == [r.source for r in cpu]
    for a, b in zip(cpu, gpu[:8]):
        assert a.top1.index == b.top1.index
        # TF32 convolutions on the GPU: close, not bit-equal
        sa = {c.index: c.score for c in a.topk}
        sb = {c.index: c.score for c in b.topk}
        common = set(sa) & set(sb)
        assert max(abs(sa[i] - sb[i]) for i in common) < 2e-2


def test_segment_and_detect_on_cuda_match_cpu(calibrated, photographs):
    _, path = calibrated("lraspp_mobilenet_v3_large", num_classes=21, weights_backbone=None)
    images = list(photographs.values())[:3]
    cpu = ti.load("segment", "lraspp_mobilenet_v3_large", path, device="cpu")(images)
    gpu = ti.load("segment", "lraspp_mobilenet_v3_large", path, device="cuda")(images)
    for a, b in zip(cpu, gpu):
        assert (a.mask == b.mask).mean() > 0.99
    from test_detect import RED_BOX, RedBoxOracle, scene

    det = ti.load("detect", RedBoxOracle("yolov8"), device="cuda", labels=["a", "b", "red"])
    result = det(scene())
    assert np.abs(result.boxes[0] - np.array(RED_BOX)).max() <= 1.0
    torch.manual_seed(0)
    frcnn_cpu = ti.load("detect", "fasterrcnn_mobilenet_v3_large_320_fpn", device="cpu", conf=0.0)
    frcnn_gpu = ti.load("detect", frcnn_cpu.model.module, device="cuda", conf=0.0)
    assert frcnn_gpu.decoder == "torchvision"
    # runs on the GPU with its own transform; boxes come back in the image's own pixels
    found = frcnn_gpu(images[0])
    h, w = images[0].height, images[0].width
    assert found.ok and found.image_size == (h, w)
    assert (found.boxes[:, [0, 2]] <= w + 1e-3).all() and (found.boxes[:, [1, 3]] <= h + 1e-3).all()


@pytest.mark.parametrize("backend,precision", [("torch", "bf16"), ("torch", "fp16"),
                                               ("torchscript", "fp32"), ("torchscript", "fp16")])
def test_reduced_precision_on_cuda_is_verified(backend, precision, tiny_classifier_weights):
    _, path = tiny_classifier_weights
    try:
        p = ti.load("classify", "mobilenet_v3_small", path, device="cuda", backend=backend,
                    precision=precision)
    except ti.TorchinferError as exc:  # refused: it must say what differed
        assert "agreement" in str(exc), str(exc)
        return
    check = p.backend_report.chosen.check
    assert check.passed
    print(f"{backend}/{precision}: {check.describe()}")
