"""Small models for the procedural shapes dataset (``torchinfer.datasets.shapes``).

All three are built from torchvision's MobileNetV3 blocks (inverted residuals with
squeeze-and-excitation, ``torchvision.models.mobilenetv3``), narrowed for a task of four
shapes. Plain stacks of 3x3 convolutions of the same size sat at chance for hundreds of steps
before they told a star from a square; these learn the outlines within the first epoch. The
trained weights ship in ``torchinfer/assets`` (``scripts/train_shapes.py``).

- ``shapes_classifier``: (B, 3, H, W) normalised -> logits (B, C). torchvision's
  ``MobileNetV3`` (small layout, half width).
- ``shapes_segmenter``: encoder + U-Net decoder; logits (B, C, H/2, W/2), background class 0.
- ``shapes_detector``: encoder + top-down merge to stride 8 + anchor-free head (FCOS-like
  distances to the four box sides, IoU-aware class scores), in the YOLOv8 export layout
  (B, 4 + C, N): centre x, centre y, width, height in input pixels, then per-class scores in
  [0, 1].
- ``shapes_multitask``: three heads in one pass over one encoder and one U-Net decoder (to
  stride 4; the boxes are read off its stride-8 map, without a neck of their own), at about
  0.35x the MACs of the three models above one after the other; a dict of the three outputs:
  ``"shape"`` (B, C) logits of the dominant shape class, ``"mask"`` (B, C + 1, H/4, W/4)
  segmentation logits, ``"objects"`` (B, 4 + C, N) detections in the YOLOv8 layout.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig, MobileNetV3
from torchvision.ops import Conv2dNormActivation

from .registry import register_model

# MobileNetV3's eps; torch's default momentum, since MobileNetV3's 0.01 leaves the running
# statistics behind in a training run of a few hundred steps
_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)

# (input, kernel, expanded, output, squeeze-excite, activation, stride): MobileNetV3-small's
# layout, narrower, grouped by output stride (the encoder's skip connections come from the end
# of each group)
_ENCODER = (
    ((16, 3, 16, 16, True, "RE", 2),),  # stride 4
    ((16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1)),  # 8
    ((24, 5, 96, 40, True, "HS", 2), (40, 5, 160, 40, True, "HS", 1),
     (40, 5, 160, 48, True, "HS", 1)),  # 16
    ((48, 5, 192, 64, True, "HS", 2), (64, 5, 256, 64, True, "HS", 1)),  # 32
)


def _block(cin: int, k: int, exp: int, cout: int, se: bool, act: str, stride: int) -> nn.Module:
    return InvertedResidual(InvertedResidualConfig(cin, k, exp, cout, se, act, stride, 1, 1.0),
                            _BN)


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> Conv2dNormActivation:
    return Conv2dNormActivation(cin, cout, kernel, stride, norm_layer=_BN,
                                activation_layer=nn.ReLU)


class Encoder(nn.Module):
    """A stride-2 stem, then inverted-residual groups; returns the feature maps at strides
    2, 4, 8, 16 and 32 (16, 16, 24, 48, 64 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv2dNormActivation(3, 16, 3, 2, norm_layer=_BN,
                                         activation_layer=nn.Hardswish)
        self.stages = nn.ModuleList(nn.Sequential(*(_block(*b) for b in group))
                                    for group in _ENCODER)
        self.widths = (16, *(group[-1][3] for group in _ENCODER))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class _Up(nn.Module):
    """Upsample the coarser map to the skip's size, concatenate, convolve."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv = _conv(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


def _unet_decoder(widths: tuple[int, ...], decoder: tuple[int, ...]) -> nn.ModuleList:
    """From the encoder's last map back up through its skips: one ``_Up`` per width of
    ``decoder`` (the last is the decoder's output width)."""
    ups, cin = [], widths[-1]
    for skip, cout in zip(reversed(widths[:-1]), decoder):
        ups.append(_Up(cin, skip, cout))
        cin = cout
    return nn.ModuleList(ups)


def _box_predictors(width: int, num_classes: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The anchor-free head on a ``width``-channel map: ``cls`` (class logits) and ``box``
    (side distances before the softplus), as the detector and the multitask network use it."""
    cls, box = nn.Conv2d(width, num_classes, 1), nn.Conv2d(width, 4, 1)
    assert cls.bias is not None and box.bias is not None  # Conv2d's default bias
    nn.init.constant_(cls.bias, -4.6)  # every score starts near 0.01 (focal-loss prior)
    nn.init.constant_(box.bias, 1.0)
    return cls, box


def _detection_head(widths: tuple[int, ...], num_classes: int, neck: int, head: int
                    ) -> tuple[_Up, _Up, nn.Sequential, nn.Conv2d, nn.Conv2d]:
    """The detector's top-down merge to stride 8 (``up16``, ``up8``), tower and head (``cls``,
    ``box``)."""
    cls, box = _box_predictors(head, num_classes)  # first: the order the weights are drawn in
    return (_Up(widths[4], widths[3], neck), _Up(neck, widths[2], neck),
            nn.Sequential(_conv(neck, head), _conv(head, head)), cls, box)


class ShapesSegmenter(nn.Module):
    """U-Net: the encoder to stride 32, a decoder back to stride 2 with skip connections."""

    def __init__(self, num_classes: int = 5, decoder: tuple[int, ...] = (48, 32, 24, 16)):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = _unet_decoder(self.encoder.widths, decoder)
        self.head = nn.Conv2d(decoder[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for up, skip in zip(self.decoder, reversed(feats[:-1])):
            y = up(y, skip)
        return self.head(y)


class ShapesDepth(ShapesSegmenter):
    """The segmenter's U-Net with one output: depth in metres, exp of what the head gives (so
    always positive, and trained on log depth), at half the input resolution."""

    depth_kind = "metric"  # what tasks.depth reads: it predicts metres, not relative depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).clamp(-8.0, 8.0).exp()


def cell_centres(h: int, w: int, stride: int, device: torch.device) -> torch.Tensor:
    """(2, h*w) x, y of the centres of an h x w grid of ``stride``-pixel cells, in input
    pixels."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()]).add_(0.5).mul_(stride)


class ShapesDetector(nn.Module):
    """Encoder + top-down merge to stride 8 + a head: per cell, class logits and the distances
    (left, top, right, bottom) from the cell centre to the box sides.

    ``forward`` returns the decoded (B, 4 + C, N) tensor; ``raw`` what training needs.
    """

    stride = 8

    def __init__(self, num_classes: int = 4, neck: int = 64, head: int = 64):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder()
        w = self.encoder.widths
        self.up16, self.up8, self.tower, self.cls, self.box = _detection_head(w, num_classes,
                                                                              neck, head)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, C, h, w) and side distances in input pixels (B, 4, h, w)."""
        f = self.encoder(x)
        y = self.tower(self.up8(self.up16(f[4], f[3]), f[2]))
        return self.cls(y), F.softplus(self.box(y)) * self.stride

    def centres(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(2, h*w) x, y of the cell centres in input pixels."""
        return cell_centres(h, w, self.stride, device)

    @staticmethod
    def decode(distances: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """(B, 4, N) left/top/right/bottom distances -> (B, 4, N) cx, cy, w, h."""
        left, top, right, bottom = distances.unbind(1)
        cx = centres[0] + (right - left) / 2
        cy = centres[1] + (bottom - top) / 2
        return torch.stack([cx, cy, left + right, top + bottom], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, dist = self.raw(x)
        _, _, h, w = logits.shape
        boxes = self.decode(dist.flatten(2), self.centres(h, w, x.device))
        return torch.cat([boxes, logits.flatten(2).sigmoid()], dim=1)


class ShapesMultitask(nn.Module):
    """One shared ``Encoder`` and U-Net decoder to stride 4, three heads read off it:

    - ``mask``: class logits at stride 4 from a 3x3 convolution on the decoder's stride-4
      map; the predictor upsamples them to the image, as it does the segmenter's. The
      segmenter's last decoder stage (16 channels over 40, at stride 2) cost 94 of its 210
      MMACs; an earlier version put a cheaper correction there instead (logits upsampled
      to stride 2 and corrected by a 3x3 convolution over them and the encoder's stride-2
      map: 15.5 MMACs, mIoU +0.013 in early trials, +0.002 with the final recipe), but its
      work at 128 x 128 is bound by memory, not arithmetic, and took 15 % of the forward on
      the CPU for a mask already above the bar without it;
    - ``shape``: the dominant shape is the class with the largest visible area, so its logits
      are areas read off the mask: the log of each shape class's mean probability over the
      picture, each pixel's foreground probability (one minus the background's) split between
      the shape classes by a softmax of their mask logits plus a correction from
      ``shape_head``: a 64-wide 1x1 convolution (batch norm, ReLU) and a 1x1 one to the
      classes, on the decoder's stride-16 map beside the encoder's stride-32 one, upsampled
      to stride 4 (1.9 MMACs). Its last layer starts at zero, where the head is the mask's
      areas alone (the head of the earlier versions, which had no weights): they name a
      scene's dominant class (99-100 % top-1), but the mask, a 3x3 view at stride 4,
      mistook the one shape of a classification picture, up to twice as wide as a scene's
      largest once resized to the input, for another (86 % top-1 on 500 pictures, 55 of 125
      stars called triangles).
      The deep maps see the whole outline: 100 % on those pictures, 98.6-99.4 % on scenes.
      Heads learnt on pooled features instead (the encoder's, tried first; later the
      decoder's too, with the mask's areas as inputs) named the pictures' shape but only
      92-98 % of the scenes' dominant class, whose visible area is 1.5x the next class's;
    - ``objects``: a tower of two 3x3 convolutions and the anchor-free head of
      ``ShapesDetector`` on the decoder's stride-8 map, decoded exactly as ``ShapesDetector``
      does (``raw`` gives training its logits and side distances). That map already merges
      strides 32, 16 and 8, as the detector's own top-down neck does: a second neck beside
      the decoder computed much the same again (68 MMACs).

    ``forward`` returns ``{"shape", "mask", "objects"}`` in that order.
    """

    stride = ShapesDetector.stride

    def __init__(self, num_classes: int = 4, decoder: tuple[int, ...] = (48, 32, 16),
                 tower: int = 48, shape: int = 64):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder()
        w = self.encoder.widths
        # ShapesSegmenter's decoder without its last stage (same attribute names, so its
        # weights start the stages of the same width: the first two); its maps are at
        # strides 16, 8, 4. The stride-4 stage is 16 wide, not the segmenter's 24: it feeds
        # the mask alone, and 16 cost about 0.5 ms less per image on one core (nothing
        # measurable on two) for mIoU 0.892 instead of 0.897
        self.decoder = _unet_decoder(w, decoder)
        self.head = nn.Conv2d(decoder[-1], num_classes + 1, 3, padding=1)
        # 48 wide, not the detector's 64: 35 MMACs instead of 57, and mAP@.5 0.94 in trials
        self.tower = nn.Sequential(_conv(decoder[1], tower), _conv(tower, tower))
        self.cls, self.box = _box_predictors(tower, num_classes)
        # built last, so the modules above draw the same initial weights as before it existed;
        # its output zero, so an untrained head reads the mask's areas unchanged
        last = nn.Conv2d(shape, num_classes, 1)
        nn.init.zeros_(last.weight)
        assert last.bias is not None  # Conv2d's default bias
        nn.init.zeros_(last.bias)
        self.shape_head = nn.Sequential(_conv(decoder[0] + w[-1], shape, kernel=1), last)

    def shape_logits(self, feats: list[torch.Tensor], maps: list[torch.Tensor],
                     mask: torch.Tensor) -> torch.Tensor:
        """(B, C) log of each shape class's mean probability over the picture: each pixel's
        foreground probability (one minus the (B, C + 1, h, w) mask logits' background)
        split between the shape classes by a softmax of their mask logits plus the
        ``shape_head`` correction; floored so that fp16 gives no -inf."""
        deep = maps[0]  # stride 16
        coarse = F.interpolate(feats[-1], size=deep.shape[-2:], mode="bilinear",
                               align_corners=False)
        correction = F.interpolate(self.shape_head(torch.cat([deep, coarse], dim=1)),
                                   size=mask.shape[-2:], mode="bilinear", align_corners=False)
        foreground = 1 - mask.softmax(1)[:, :1]
        shares = (mask[:, 1:] + correction).softmax(1)
        return (shares * foreground).mean((2, 3)).clamp_min(1e-6).log()

    def decoder_maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The decoder's maps, coarsest first (strides 16, 8, 4), from the encoder's."""
        maps, y = [], feats[-1]
        for up, skip in zip(self.decoder, reversed(feats[:-1])):
            y = up(y, skip)
            maps.append(y)
        return maps

    def mask_logits(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(B, C + 1, H/4, W/4) segmentation logits from the decoder's maps."""
        return self.head(maps[-1])

    def object_maps(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, C, h, w) and side distances in input pixels (B, 4, h, w) from the
        decoder's maps."""
        y = self.tower(maps[1])  # stride 8
        return self.cls(y), F.softplus(self.box(y)) * self.stride

    def raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What training needs: ``shape`` and ``mask`` logits, ``objects`` class logits and
        ``distances`` (the detector's ``raw``), from one pass of the encoder and decoder."""
        feats = self.encoder(x)
        maps = self.decoder_maps(feats)
        mask = self.mask_logits(maps)
        logits, distances = self.object_maps(maps)
        return {"shape": self.shape_logits(feats, maps, mask), "mask": mask, "objects": logits,
                "distances": distances}

    def centres(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(2, h*w) x, y of the cell centres in input pixels."""
        return cell_centres(h, w, self.stride, device)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.raw(x)
        logits, distances = out.pop("objects"), out.pop("distances")
        _, _, h, w = logits.shape
        boxes = ShapesDetector.decode(distances.flatten(2), self.centres(h, w, x.device))
        out["objects"] = torch.cat([boxes, logits.flatten(2).sigmoid()], dim=1)
        return out


# torchvision's MobileNetV3-small layout at half width
_CLASSIFIER = (
    (8, 3, 8, 8, True, "RE", 2), (8, 3, 40, 16, False, "RE", 2),
    (16, 3, 48, 16, False, "RE", 1), (16, 5, 48, 24, True, "HS", 2),
    (24, 5, 120, 24, True, "HS", 1), (24, 5, 120, 24, True, "HS", 1),
    (24, 5, 64, 24, True, "HS", 1), (24, 5, 72, 24, True, "HS", 1),
    (24, 5, 144, 48, True, "HS", 2), (48, 5, 288, 48, True, "HS", 1),
    (48, 5, 288, 48, True, "HS", 1),
)


@register_model(task="classify")
def shapes_classifier(num_classes: int = 4) -> MobileNetV3:
    """Shape classifier: torchvision's MobileNetV3 (small layout, half width, 256-wide head)."""
    setting = [InvertedResidualConfig(cin, k, exp, cout, se, act, s, 1, 1.0)
               for cin, k, exp, cout, se, act, s in _CLASSIFIER]
    return MobileNetV3(setting, last_channel=256, num_classes=num_classes, norm_layer=_BN)


@register_model(task="embed")
def shapes_embed(num_classes: int = 64) -> MobileNetV3:
    """Shapes-scene embeddings for near-duplicate search: the classifier's network with a
    ``num_classes``-wide output (the vector), trained contrastively so that copies of a scene
    (re-encoded, resized, cropped) land together and other scenes apart."""
    return shapes_classifier(num_classes=num_classes)


@register_model(task="segment")
def shapes_segmenter(num_classes: int = 5) -> ShapesSegmenter:
    """Shape segmenter (background + shapes): U-Net, logits at half the input resolution."""
    return ShapesSegmenter(num_classes)


@register_model(task="detect")
def shapes_detector(num_classes: int = 4) -> ShapesDetector:
    """Shape detector: YOLOv8-layout output (B, 4 + C, N), one level at stride 8."""
    return ShapesDetector(num_classes)


@register_model(task="depth")
def shapes_depth(num_classes: int = 1) -> ShapesDepth:
    """Shape-scene depth in metres (torchinfer.datasets.shapes_depth): the segmenter's U-Net
    with one output, at half the input resolution."""
    return ShapesDepth(num_classes)


@register_model(task="multi")
def shapes_multitask(num_classes: int = 4) -> ShapesMultitask:
    """Shapes in one pass: dominant shape class, semantic mask and boxes from one encoder."""
    return ShapesMultitask(num_classes)
