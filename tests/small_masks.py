"""The small-mask parity fixtures, made from the shipped Ultralytics segment exports by editing
two heads' weights, so that no second copy of each model is stored.

The parity fixtures' models were trained until their masks were large, and on them
Ultralytics' two ways of deciding a mask (at the letterboxed input by default, at the original
resolution with ``retina_masks=True``) keep the same detections. Shifting every mask logit
down shrinks each mask to its strongest pixels, and raising the class scores lets weak
detections pass predict's default threshold (0.25): many detections then have masks a few
pixels wide, where the two ways differ. benchmarks/make_ultralytics_fixtures.py records
Ultralytics' predict on these files; tests/test_ultralytics_parity.py compares torchinfer's.

The edit, in the ONNX graph's weights (the same layers in YOLOv8 and YOLO11 segment heads):
- the class branches' last convolutions (``cv3.i.2``): bias + ``CLASS_SHIFT``;
- prototype channel 0 (``proto.cv3``) made the constant SiLU(1), and every mask-coefficient
  branch's coefficient 0 (``cv4.i.2``) the constant -MASK_SHIFT / SiLU(1): coefficient x
  prototype then adds -MASK_SHIFT to every mask logit.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

CLASS_SHIFT, MASK_SHIFT = 3.0, 5.0
_CLASS_BIAS = re.compile(r"model\.\d+\.cv3\.\d+\.2\.bias")
_COEFFICIENTS = re.compile(r"model\.\d+\.cv4\.\d+\.2\.(weight|bias)")
_PROTOTYPES = re.compile(r"model\.\d+\.proto\.cv3\.conv\.(weight|bias)")


def small_mask_model(source: Path, target: Path) -> Path:
    """Write ``source`` (an Ultralytics segment export) with the edit above to ``target``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    silu_1 = 1 / (1 + math.exp(-1.0))
    edited = {"class": 0, "coefficients": 0, "prototypes": 0}
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init).copy()
        is_bias = init.name.endswith("bias")
        if _CLASS_BIAS.fullmatch(init.name):
            values += CLASS_SHIFT
            edited["class"] += 1
        elif _COEFFICIENTS.fullmatch(init.name):
            values[0] = -MASK_SHIFT / silu_1 if is_bias else 0.0
            edited["coefficients"] += 1
        elif _PROTOTYPES.fullmatch(init.name):
            values[0] = 1.0 if is_bias else 0.0
            edited["prototypes"] += 1
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float32), init.name))
    # three scales: three class and three coefficient branches (weight and bias each), one
    # prototype layer (weight and bias)
    if edited != {"class": 3, "coefficients": 6, "prototypes": 2}:
        raise ValueError(f"{source}: not the segment head this edit knows ({edited})")
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target
