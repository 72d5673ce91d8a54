"""What loading a big model spends on the memo's key, side by side with hashing every weight.

vgg16 (138 M parameters, a ~530 MB safetensors file) is saved with random weights; then, in
one run, interleaved:
  load       ``ti.load("classify", "vgg16", file)``: what a user waits for (no measuring
             happens at load; the key is computed later, before the first batch)
  stamp      ``runtime.memo.source_stamp`` (what ``ti.load`` takes of the file: size, mtime,
             first and last MiB) + ``model_stamp`` (the architecture's shapes, versions): the
             key the remembered measurements are kept under
  full hash  ``runtime.memo.content_fingerprint``: a sha256 of every weight's bytes (how the
             key was made before, and still how an export of a model with no file is named)

    python benchmarks/memo_key.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
import time
from pathlib import Path

import torchvision
from safetensors.torch import save_file

import torchinfer as ti
from torchinfer.runtime import memo
from torchinfer.runtime.cpu import describe_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    model = torchvision.models.vgg16()
    path = tmp / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    print(f"CPU: {describe_cpu()}; {path.name}: {path.stat().st_size / 1e6:.0f} MB")
    loaded = ti.load("classify", "vgg16", path, device="cpu", backend="torch", precision="fp32")
    steps = {
        "load": lambda: ti.load("classify", "vgg16", path, device="cpu", backend="torch",
                                precision="fp32"),
        "stamp": lambda: memo.model_stamp(loaded.model, "classify",
                                          memo.source_stamp("vgg16", path)),
        "full hash": lambda: memo.content_fingerprint(loaded.model, "classify"),
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - t0)
    for name, seconds in best.items():
        print(f"  {name:<10} {seconds * 1000:8.1f} ms (best of {args.rounds})")
    print(f"  the stamp costs {best['stamp'] * 1000:.1f} ms, {best['stamp'] / best['load']:.1%} "
          f"of a load, and is "
          f"{best['full hash'] / best['stamp']:.0f}x cheaper than hashing every weight")


if __name__ == "__main__":
    main()
