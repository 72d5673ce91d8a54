"""Batch norms folded into the convolutions before them, for inference.

In eval mode a BatchNorm2d is a per-channel scale and shift, so the convolution before it can
absorb it: w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta. Eager PyTorch
otherwise reads and writes every activation once more for each norm; folded, mobilenet_v2's
forward ran 1.8-2x as fast on 2 CPU cores at batch 4, resnet50's 1.3x and the bundled
networks' 1.15-1.35x (BENCHMARKS.md). The answers are the same up to float rounding (about
1e-6 of the logits' scale).

Folded: pairs that sit side by side in an ``nn.Sequential`` (torchvision's
``Conv2dNormActivation``, VGG-BN, ShuffleNet, the DeepLab/FCN heads, ResNet's downsample, the
bundled networks), where the convolution's output goes nowhere but the norm, and the pairs of
torchvision's ResNet and its blocks and of GoogLeNet's and Inception's ``BasicConv2d``, whose
``forward`` (read from its source) does the same. Any other norm called from a ``forward``
would need the graph traced to prove that, and stays as it is.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.googlenet import BasicConv2d as GoogLeNetConv
from torchvision.models.inception import BasicConv2d as InceptionConv
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# (convolution, norm) attributes of blocks whose forward feeds the convolution's output to the
# norm alone; exact types (a subclass may have a forward of its own)
BLOCK_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    ResNet: (("conv1", "bn1"),),
    GoogLeNetConv: (("conv", "bn"),),
    InceptionConv: (("conv", "bn"),),
}


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` (in eval mode) with each foldable BatchNorm2d folded into its convolution
    and replaced by ``nn.Identity``; ``module`` itself unless something folds.

    ``module`` is left as it is (the caller may still inspect, export or train it): the answer
    is a new tree only along the paths to a folded pair, sharing every other submodule and
    parameter, so it costs the memory of the folded convolutions' weights."""
    replaced: dict[str, nn.Module] = {}
    for name, child in module.named_children():
        folded = fold_batch_norms(child)
        if folded is not child:
            replaced[name] = folded
    # a Sequential that runs its children in order (a subclass's own forward may not)
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        children = list(module.named_children())
        replaced.update(_folded_pairs(list(zip(children, children[1:]))))
    elif type(module) in BLOCK_PAIRS:
        replaced.update(_folded_pairs([((c, getattr(module, c)), (n, getattr(module, n)))
                                       for c, n in BLOCK_PAIRS[type(module)]]))
    if not replaced:
        return module
    # a shallow copy with a table of children of its own: setting a child on it must not
    # set it on ``module``
    new = copy.copy(module)
    new._modules = dict(module._modules)
    for name, child in replaced.items():
        setattr(new, name, child)
    return new


def _folded_pairs(pairs: list[tuple[tuple[str, nn.Module], tuple[str, nn.Module]]]
                  ) -> dict[str, nn.Module]:
    """{name: replacement} for each (convolution, norm) pair of named children that is a
    Conv2d and a BatchNorm2d in eval mode."""
    out: dict[str, nn.Module] = {}
    for (conv_name, conv), (norm_name, norm) in pairs:
        # exact types: a subclass may compute something else (timm's BatchNormAct2d also
        # activates)
        if (type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and _foldable(conv, norm)
                and conv_name not in out):
            out[conv_name] = fuse_conv_bn_eval(conv, norm)
            out[norm_name] = nn.Identity()
    return out


def _foldable(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> bool:
    # in training mode, or without running statistics, a norm normalises by the batch's own
    return (not conv.training and not norm.training
            and norm.running_mean is not None and norm.running_var is not None
            and norm.num_features == conv.out_channels)
