"""Folder throughput of segmentation and detection vs the raw model forward, in one run.

For each model: (b) torchinfer's `predict` over a folder of JPEGs (decode, preprocess, model,
postprocess, JSONL) and (b+vis) the same with --save-vis (drawing + writing annotated images),
against (c) the same module's forward on the very same inputs, already decoded and prepared,
and (d) decoding + preprocessing alone. For segmentation, (a) is the notes' loop: per image
cv2.imread, resize (short side 520), float64 normalise, forward, logits resized to the image,
argmax. Prints images/s, the ratios, where (b)'s time goes (ms per image from summary.json),
its share of the core-time bound cores / (decode + cores / raw forward rate), and peak RSS.

    python benchmarks/segment_detect_folder.py [--images 24] [--rounds 2]

Models: deeplabv3_mobilenet_v3_large, fasterrcnn_mobilenet_v3_large_320_fpn (random weights:
the work per image does not depend on them, except a detector's number of boxes) and a
YOLOv8-format network with YOLOv8n's output (84 x 8400 at 640) run through the raw-tensor path,
on torch and exported to ONNX (with Ultralytics-style metadata, run by path) on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn

import torchinfer as ti
from torchinfer.runner.run import run_to_dir
from torchinfer.testing import write_sample_jpegs


class YoloV8Shaped(nn.Module):
    """Stride-8/16/32 conv pyramid with a YOLOv8-layout head: (B, 4 + 80, 80*80 + 40*40 + 20*20).
    Not YOLOv8n's weights or exact layers: a stand-in of similar output and modest compute."""

    def __init__(self, classes: int = 80, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.SiLU())

        self.s8 = nn.Sequential(block(3, width // 2), block(width // 2, width), block(width, width))
        self.s16 = block(width, 2 * width)
        self.s32 = block(2 * width, 4 * width)
        self.heads = nn.ModuleList(nn.Conv2d(c, 4 + classes, 1) for c in (width, 2 * width, 4 * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8 = self.s8(x)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        outs = [head(f).flatten(2) for head, f in zip(self.heads, (f8, f16, f32))]
        raw = torch.cat(outs, dim=2)
        boxes = raw[:, :4].sigmoid() * 640  # xywh in input pixels
        # class logits shifted so that, as with trained weights, few anchors pass conf=0.25
        return torch.cat([boxes, (raw[:, 4:] - 4).sigmoid()], dim=1)


def export_ultralytics_style(model: nn.Module, path: Path) -> Path:
    """The network as an ONNX file carrying the metadata Ultralytics' exporter writes, so it
    runs by path alone like a user's `best.onnx`."""
    import onnx

    torch.onnx.export(model, (torch.zeros(1, 3, 640, 640),), str(path), input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
    proto = onnx.load(str(path))
    names = {i: f"class{i}" for i in range(80)}
    for key, value in {"author": "Ultralytics", "task": "detect", "stride": "32",
                       "imgsz": "[640, 640]", "names": str(names)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def seg_loop(model: nn.Module, paths: list[Path]) -> None:
    """The notes' paradigm for segmentation, one image at a time."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    with torch.inference_mode():
        for path in paths:
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            h, w = image.shape[:2]
            scale = 520 / min(h, w)
            inputs = cv2.resize(image, (round(w * scale), round(h * scale))) / 255
            inputs = ((inputs - mean) / std).transpose(2, 0, 1)[np.newaxis]
            logits = model(torch.from_numpy(inputs).float())["out"]
            TF.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0)


def measure(name: str, predictor, folder: Path, tmp: Path, rounds: int,
            loop: Callable[[], None] | None = None) -> None:
    paths = sorted(folder.glob("*.jpg"))
    bs = predictor.batch_size
    prepared = []
    for i in range(0, len(paths), bs):  # decoded + preprocessed once, outside the timing
        images = [predictor.loader.load(p) for p in paths[i:i + bs]]
        batch = predictor.preprocess(images, [str(p) for p in paths[i:i + bs]])
        prepared.append((predictor.device_preprocess(predictor.to_device(batch.tensor)), batch))

    def raw_forward():
        with torch.inference_mode():
            for tensor, batch in prepared:
                predictor.forward(tensor, batch)

    summaries = {}

    def ours(save_vis: bool):
        def run():
            summaries[save_vis] = run_to_dir(predictor, [str(folder)], tmp / f"{name}-{save_vis}",
                                             save_vis=save_vis, exist_ok=True)
        return run

    def decode_only():
        for i in range(0, len(paths), bs):
            predictor.preprocess([predictor.loader.load(p) for p in paths[i:i + bs]],
                                 [str(p) for p in paths[i:i + bs]])

    variants = {"c": raw_forward, "b": ours(False), "b+vis": ours(True), "d": decode_only}
    if loop is not None:
        variants["a"] = loop
    for fn in variants.values():
        fn()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for key, fn in variants.items():
            best[key] = min(best[key], timed(fn))
    rate = {k: len(paths) / v for k, v in best.items()}
    cores = torch.get_num_threads()
    bound = cores / (1 / rate["d"] + cores / rate["c"])
    stages = ", ".join(f"{k} {v:.1f}" for k, v in summaries[False].stage_ms.items())
    loop_text = f" | notes' loop {rate['a']:.1f} img/s (b/a {rate['b'] / rate['a']:.2f})" \
        if "a" in rate else ""
    print(f"{name}\n  raw forward {rate['c']:6.1f} img/s | predict {rate['b']:6.1f} img/s "
          f"(b/c {rate['b'] / rate['c']:.2f}) | with --save-vis {rate['b+vis']:6.1f} img/s"
          f"{loop_text}\n  decode + preprocess alone {rate['d']:.1f} img/s | bound {bound:.1f} "
          f"img/s, reached {rate['b'] / bound:.0%} | ms/img: {stages}, drawing+saving "
          f"{summaries[True].draw_ms:.1f} | {predictor.pipeline.reason if predictor.pipeline else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # images, outputs
    folder = tmp / "images"
    folder.mkdir()
    write_sample_jpegs(folder, args.images)
    torch.manual_seed(0)
    print(f"{args.images} JPEGs (long side 256-1600 px), CPU, {torch.get_num_threads()} threads, "
          f"best of {args.rounds}")
    seg = ti.load("segment", "deeplabv3_mobilenet_v3_large", device="cpu")
    # the notes' model: the same weights, in the default memory layout
    plain = copy.deepcopy(seg.module).to(memory_format=torch.contiguous_format).eval()
    paths = sorted(folder.glob("*.jpg"))
    measure("deeplabv3_mobilenet_v3_large (segment)", seg, folder, tmp, args.rounds,
            loop=lambda: seg_loop(plain, paths))
    measure("fasterrcnn_mobilenet_v3_large_320_fpn",
            ti.load("detect", "fasterrcnn_mobilenet_v3_large_320_fpn", device="cpu"), folder, tmp,
            args.rounds)
    yolo = YoloV8Shaped().eval()
    measure("YOLOv8-format network, 640 (torch)",
            ti.load("detect", yolo, device="cpu", conf=0.25), folder, tmp, args.rounds)
    onnx_path = export_ultralytics_style(yolo, tmp / "yolo.onnx")
    measure("YOLOv8-format network, 640 (ONNX Runtime)",
            ti.load("detect", str(onnx_path), device="cpu", conf=0.25), folder, tmp, args.rounds)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
