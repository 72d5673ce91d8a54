"""Our classification pipeline equals torchvision's reference pipeline on real photographs.

Reference: the same weights, ``weights.transforms()`` applied to the PIL image, then the model.
The weights are calibrated on the photographs (see torchinfer.testing) so the logits are large
and picture-dependent: a channel swap or a different resize would not match.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.models import get_model_weights

import torchinfer as ti


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18", "efficientnet_b0"])
def test_logits_match_torchvision_reference(arch, calibrated, photo_paths):
    model, weights_path = calibrated(arch)
    clf = ti.load("classify", arch, weights_path, device="cpu")
    reference_tf = get_model_weights(arch).DEFAULT.transforms()

    images = [clf.loader.load(p) for p in photo_paths]
    ours_batch = clf.preprocess(images, [str(p) for p in photo_paths])
    with torch.inference_mode():
        ours = clf.forward(clf.device_preprocess(ours_batch.tensor))
        ref_inputs = torch.stack([reference_tf(Image.open(p).convert("RGB")) for p in photo_paths])
        reference = model.eval()(ref_inputs)

    # inputs are identical (same PIL resize), so logits agree to float32 rounding (ours folds
    # the batch norms into the convolutions: the same arithmetic in another order)
    assert torch.allclose(clf.device_preprocess(ours_batch.tensor), ref_inputs, atol=1e-6, rtol=0)
    assert torch.allclose(ours, reference, atol=1e-3, rtol=1e-3)
    # the weights really look at the picture: logits spread, answers differ between photos
    assert reference.std() > 1.0
    assert len(set(reference.argmax(1).tolist())) >= 2
    # and the public call gives the same top-1 and probability
    for path, ref_row in zip(photo_paths, reference):
        result = clf(path)
        assert result.top1.index == int(ref_row.argmax())
        assert result.top1.score == pytest.approx(float(ref_row.softmax(0).max()), abs=1e-4)
        assert result.top1.label == get_model_weights(arch).DEFAULT.meta["categories"][result.top1.index]


def test_channel_swap_would_be_caught(calibrated, photo_paths):
    """Guard for the guard: with BGR input the logits differ far beyond the tolerance."""
    model, weights_path = calibrated("resnet18")
    clf = ti.load("classify", "resnet18", weights_path, device="cpu")
    img = clf.loader.load(photo_paths[0])
    batch = clf.device_preprocess(clf.preprocess([img], ["x"]).tensor)
    with torch.inference_mode():
        good = clf.forward(batch)
        swapped = clf.forward(batch.flip(1))
    assert not torch.allclose(good, swapped, atol=1e-3, rtol=1e-3)
    assert (good - swapped).abs().max() > 0.5
