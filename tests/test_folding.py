"""Batch norms folded into the convolutions before them: the same answers, the original kept."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import torchinfer as ti
from torchinfer.models.folding import fold_batch_norms


def _norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch-norm statistics and affine terms away from a fresh model's identity, so that a
    wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)
    return model.eval()


@pytest.mark.parametrize("arch, norms, shared", [("mobilenet_v2", 52, "classifier"),
                                                 ("resnet18", 20, "fc")])
def test_folded_model_computes_the_same_and_leaves_the_original_alone(arch, norms, shared):
    """Sequential pairs (mobilenet_v2), ResNet's blocks and downsample pairs (resnet18)."""
    model = _with_statistics(torchvision.models.get_model(arch, weights=None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    assert _norms(model) == norms and _norms(folded) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # what did not fold is shared, not copied
    assert getattr(folded, shared) is getattr(model, shared)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        ref, got = model(x), folded(x)
    assert ref.std() > 0.1
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


class _UsesTheConvTwice(nn.Sequential):
    """A Sequential whose own forward reads the convolution's output besides the norm's."""

    def forward(self, x):
        y = self[0](x)
        return self[1](y) + y


class _NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) * y


def test_only_pairs_that_nothing_else_reads_fold():
    subclass = _with_statistics(_UsesTheConvTwice(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
    attributes = _with_statistics(_NotSequential())
    training = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))  # batch statistics
    batch_stats = nn.Sequential(nn.Conv2d(3, 8, 3),
                                nn.BatchNorm2d(8, track_running_stats=False)).eval()
    for module in (subclass, attributes, training, batch_stats):
        assert fold_batch_norms(module) is module
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).eval())
    assert fold_batch_norms(scripted) is scripted


def test_a_predictor_runs_the_folded_module_and_inspect_counts_the_original():
    clf = ti.load("classify", "shapes_classifier", device="cpu")
    assert _norms(clf.module) == 0 < _norms(clf.model.module)
    # the published-style count still sees every norm's parameters
    assert ti.inspect("shapes_classifier").params_total == sum(
        p.numel() for p in clf.model.module.parameters())


def _convolutional_classifiers() -> list[str]:
    # the transformers and ConvNeXt have no batch norms to fold
    return [name for name in torchvision.models.list_models(module=torchvision.models)
            if not name.startswith(("vit", "swin", "maxvit", "convnext"))]


@pytest.mark.slow
@pytest.mark.parametrize("arch", _convolutional_classifiers())
def test_every_torchvision_classifier_folded_computes_the_same(arch):
    model = _with_statistics(torchvision.models.get_model(arch, weights=None))
    folded = fold_batch_norms(model)
    side = 299 if arch == "inception_v3" else 224
    x = torch.randn(1, 3, side, side)
    with torch.inference_mode():
        ref, got = model(x), folded(x)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # only DenseNet (a norm before each convolution) keeps norms
    assert _norms(folded) == 0 or arch.startswith("densenet")
