"""Run ONNX files with ONNX Runtime behind the same interface as a PyTorch model.

``load_onnx_model("model.onnx")`` gives a ``LoadedModel`` whose module is an ``OrtModule``: a
parameter-free ``nn.Module`` whose ``forward`` feeds the tensor to an ``InferenceSession``. The
labels, task and preprocessing come from the metadata ``torchinfer.exporters.onnx.export_onnx`` embeds,
so a file exported by torchinfer runs by its path alone with the preprocessing it was made for.

Session options are chosen on purpose (see ``make_session``) and shared by every caller: export
verification, predictors and benchmarks all measure the same configuration.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import DeviceError, MissingExtraError, TorchinferError, WeightsError
from ..models import LoadedModel, PreprocessConfig
from ..runner.plan import usable_cpus

if TYPE_CHECKING:
    import onnxruntime

# Keys of the ONNX ``metadata_props`` that export_onnx writes and load_onnx_model reads.
META_VERSION = "torchinfer_version"
META_TASK = "task"
META_MODEL_NAME = "model_name"
META_LABELS = "labels"  # JSON list of class names
META_PREPROCESS = "preprocess"  # JSON of PreprocessConfig.to_dict()
META_INPUT_SIZE = "input_size"  # JSON [h, w], or null when height/width are dynamic
META_PRECISION = "precision"  # "fp32" | "fp16"
META_DETECTOR_FORMAT = "detector_format"  # "torchvision": one image in, boxes/labels/scores out

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TENSORRT = "TensorrtExecutionProvider"

# ONNX Runtime's type strings for the input types OrtModule can feed
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(double)": np.float64}


def import_onnxruntime() -> Any:
    """onnxruntime, or an error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx") from exc
    return onnxruntime


# How sessions that predictors run are made (see make_session's allow_spinning).
PREDICTOR_SESSION = {"allow_spinning": True}


def make_session(path: str | Path, *, device: str = "cpu", allow_spinning: bool = False,
                 threads: int | None = None) -> onnxruntime.InferenceSession:
    """An ``InferenceSession`` for ``path`` with torchinfer's session options.

    device: "cpu"; "cuda" / "cuda:N" (CUDA execution provider, CPU for the ops it lacks);
        "tensorrt" (TensorRT, then CUDA, then CPU; opt-in because TensorRT builds its engines
        when the session is created, which takes minutes); "auto": CUDA when this onnxruntime
        build has it, else CPU.
    allow_spinning: let idle intra-op threads busy-wait for the next op. Off by default because
        torch shares the process (torchinfer imports it; predictors preprocess with it): ORT
        threads spinning between calls take the cores torch's own spinning threads need. The
        sessions predictors run (``PREDICTOR_SESSION``) spin, and predictors keep torch to one
        thread while they stream (``Predictor._model_threads``): yolov8n at 320 px, 85.8 vs
        76.8 img/s end to end on 2 cores (BENCHMARKS.md).
    threads: intra-op threads (default: every usable core).
    """
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise TorchinferError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One model call at a time: all cores go to the ops (intra-op); the graph's independent
    # branches run in turn (inter-op = 1) rather than fighting the intra-op pool for cores.
    options.intra_op_num_threads = threads or usable_cpus()
    options.inter_op_num_threads = 1
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = _providers(device, ort.get_available_providers())
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind classes (Fail, InvalidGraph, ...)
        raise TorchinferError(f"{path}: onnxruntime cannot load it: {exc}") from exc


def _providers(device: str, available: list[str]) -> list[Any]:
    spec = device.strip().lower()
    if spec == "cpu":
        return [_CPU]
    if spec == "auto":
        return [_CUDA, _CPU] if _CUDA in available else [_CPU]
    if spec == "tensorrt" or spec == "cuda" or spec.startswith("cuda:"):
        if _CUDA not in available:
            raise DeviceError(f"device {device!r} requested but this onnxruntime has no "
                              f"{_CUDA} (it has {', '.join(available)}): "
                              "pip install onnxruntime-gpu")
        index = int(spec.split(":", 1)[1]) if spec.startswith("cuda:") else 0
        chosen: list[Any] = [(_CUDA, {"device_id": index}), _CPU]
        if spec == "tensorrt":
            if _TENSORRT not in available:
                raise DeviceError(f"device 'tensorrt' requested but this onnxruntime has no "
                                  f"{_TENSORRT} (it has {', '.join(available)})")
            chosen.insert(0, _TENSORRT)
        return chosen
    raise DeviceError(f"unsupported onnxruntime device {device!r}: use auto, cpu, cuda, "
                      "cuda:N or tensorrt")


class _SessionModule(nn.Module):
    """What the ONNX Runtime modules share: the session, and resizing its thread pool."""

    def __init__(self, session: onnxruntime.InferenceSession, source: str):
        super().__init__()
        self.session, self.source = session, source
        self.threads: int | None = None  # intra-op threads; None: as make_session chose

    def set_threads(self, threads: int) -> None:
        """Run on ``threads`` intra-op threads (a session sizes its pool when it is created,
        so a CPU session from a file is created again; a GPU session is left as it is)."""
        if threads == (self.threads or usable_cpus()) or not Path(self.source).is_file() \
                or self.session.get_providers()[0] != _CPU:
            return
        self.session = make_session(self.source, device="cpu", threads=threads,
                                    **PREDICTOR_SESSION)
        self.threads = threads

    def extra_repr(self) -> str:
        return f"{self.source}, providers={self.session.get_providers()}"


class OrtModule(_SessionModule):
    """An ONNX Runtime session that a Predictor calls like the PyTorch model it replaces.

    ``forward`` takes the (N, C, H, W) float tensor the predictor prepared (any memory format,
    any device), returns the session's first output as a float32 tensor on the input's device.
    It holds no parameters, so ``.to()``, ``.eval()`` and ``channels_last`` conversions are
    no-ops; the device the session runs on was chosen in ``make_session``.
    """

    def __init__(self, session: onnxruntime.InferenceSession, source: str = "<session>"):
        super().__init__(session, source)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise TorchinferError(f"{source}: the model has {len(inputs)} inputs "
                                  f"({', '.join(i.name for i in inputs)}); torchinfer feeds one "
                                  "image batch")
        if inputs[0].type not in _NUMPY_TYPES:
            raise TorchinferError(f"{source}: input {inputs[0].name!r} is {inputs[0].type}; "
                                  f"torchinfer feeds {', '.join(_NUMPY_TYPES)}")
        self.input_name: str = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.input_dtype = _NUMPY_TYPES[inputs[0].type]
        self.output_names: list[str] = [o.name for o in session.get_outputs()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NCHW-contiguous float on the CPU: the predictor may hand over a channels_last view,
        # and numpy() of a non-contiguous tensor would give ORT the wrong strides' worth of data.
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if array.dtype != self.input_dtype:
            array = array.astype(self.input_dtype)  # an fp16 export takes fp16 input
        fixed = self.input_shape[0] if self.input_shape else None
        if isinstance(fixed, int) and fixed > 0 and len(array) != fixed:
            # a file exported with a fixed batch (Ultralytics' default is 1): run the batch in
            # pieces of that size, the last one padded with copies of its last image
            pieces = []
            for i in range(0, len(array), fixed):
                piece = array[i:i + fixed]  # a contiguous view: no copy unless padded
                if len(piece) < fixed:
                    piece = np.concatenate([piece, np.repeat(piece[-1:], fixed - len(piece), 0)])
                pieces.append(self._run(piece)[:len(array) - i])  # the padding dropped
            return torch.cat(pieces).to(x.device)
        return self._run(array).to(x.device)

    def _run(self, array: np.ndarray) -> torch.Tensor:
        try:
            out = self.session.run(self.output_names[:1], {self.input_name: array})[0]
        except Exception as exc:  # ORT's pybind errors: wrong rank, shape, type
            raise TorchinferError(f"{self.source}: onnxruntime failed on an input of shape "
                                  f"{tuple(array.shape)} (the model takes "
                                  f"{self.input_shape}): {exc}") from exc
        # float32 like the PyTorch model it replaces, also for an fp16 file
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class OrtDetector(_SessionModule):
    """An exported torchvision detector behind torchvision's interface: a list of (3, H, W)
    float images in [0, 1] of any sizes in, one dict of ``boxes``, ``labels``, ``scores`` per
    image out (the file takes one image per call)."""

    returns_torchvision_detections = True  # DetectionPredictor reads its output as such

    def __init__(self, session: onnxruntime.InferenceSession, source: str = "<session>"):
        super().__init__(session, source)
        self.input_name = session.get_inputs()[0].name

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            array = image.detach().to("cpu", torch.float32).contiguous().numpy()
            try:
                boxes, labels, scores = self.session.run(["boxes", "labels", "scores"],
                                                         {self.input_name: array})
            except Exception as exc:  # ORT's pybind errors
                raise TorchinferError(f"{self.source}: onnxruntime failed on an image of shape "
                                      f"{tuple(array.shape)}: {exc}") from exc
            outputs.append({"boxes": torch.from_numpy(boxes).to(image.device),
                            "labels": torch.from_numpy(labels).to(image.device),
                            "scores": torch.from_numpy(scores).to(image.device)})
        return outputs


def load_onnx_model(path: str | Path, *, device: str = "auto") -> LoadedModel:
    """A LoadedModel that runs ``path`` with ONNX Runtime.

    Task, labels, model name and preprocessing come from torchinfer's metadata in the file.
    A file without it (exported by something else) gets torchvision's ImageNet preprocessing,
    cropped to the input's static height and width when the graph has them, no labels and no
    task.
    """
    path = Path(path)
    session = make_session(path, device=device, **PREDICTOR_SESSION)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get(META_DETECTOR_FORMAT) == "torchvision":
        return LoadedModel(module=OrtDetector(session, str(path)),
                           name=meta.get(META_MODEL_NAME) or path.stem, task="detect",
                           preprocess=PreprocessConfig.default("detect"),
                           labels=_labels(path, meta), weights=str(path), weights_format="onnx")
    module = OrtModule(session, str(path))
    if META_PREPROCESS not in meta and _is_ultralytics(meta):
        meta = _from_ultralytics(path, meta)
    preprocess = _preprocess(path, meta, module.input_shape)
    return LoadedModel(module=module, name=meta.get(META_MODEL_NAME) or path.stem,
                       task=meta.get(META_TASK) or None, preprocess=preprocess,
                       labels=_labels(path, meta), weights=str(path), weights_format="onnx")


# Ultralytics writes str() of Python values into metadata_props: names "{0: 'person', ...}",
# imgsz "[640, 640]", stride "32", task "detect". Tasks whose output the detect decoder reads
# as (B, 4 + C, N); "segment" and "pose" add rows (mask coefficients, keypoints) after the
# classes and "obb" an angle, so their outputs would be misread as extra classes.
_ULTRALYTICS_TASKS = {"detect": "detect", "classify": "classify"}


def _is_ultralytics(meta: dict[str, str]) -> bool:
    return "names" in meta and "imgsz" in meta and (
        meta.get("author", "").startswith("Ultralytics") or "stride" in meta)


def _from_ultralytics(path: Path, meta: dict[str, str]) -> dict[str, str]:
    """torchinfer's metadata keys derived from an Ultralytics export's: labels from ``names``,
    the letterbox (detect) or resize + crop (classify) at ``imgsz``, inputs in [0, 1] without
    mean/std (Ultralytics' preprocessing), and the task."""
    task = meta.get("task", "detect")
    if task not in _ULTRALYTICS_TASKS:
        raise TorchinferError(f"{path}: an Ultralytics {task!r} model; torchinfer runs "
                              f"Ultralytics exports of task {' or '.join(_ULTRALYTICS_TASKS)}")
    try:
        names = ast.literal_eval(meta["names"])
        imgsz = ast.literal_eval(meta["imgsz"])
    except (ValueError, SyntaxError) as exc:
        raise WeightsError(f"{path}: Ultralytics metadata 'names'/'imgsz' unreadable ({exc})") from exc
    if isinstance(names, dict):  # {0: 'person', 1: 'bicycle', ...}
        if sorted(names) != list(range(len(names))):
            raise WeightsError(f"{path}: Ultralytics 'names' ids are not 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[-1]))
    if task == "detect":
        preprocess = PreprocessConfig(resize_size=(h, w), crop_size=None, mean=(0.0, 0.0, 0.0),
                                      std=(1.0, 1.0, 1.0))
    else:
        preprocess = PreprocessConfig(resize_size=(min(h, w),), crop_size=(h, w),
                                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return {**meta, META_TASK: _ULTRALYTICS_TASKS[task],
            META_LABELS: json.dumps([str(n) for n in names]),
            META_PREPROCESS: json.dumps(preprocess.to_dict())}


def _labels(path: Path, meta: dict[str, str]) -> list[str] | None:
    if META_LABELS not in meta:
        return None
    labels = _json(path, meta, META_LABELS)
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise WeightsError(f"{path}: metadata {META_LABELS!r} must be a JSON list of names")
    return labels


def _preprocess(path: Path, meta: dict[str, str],
                input_shape: list[int | str | None]) -> PreprocessConfig:
    if META_PREPROCESS in meta:
        fields = _json(path, meta, META_PREPROCESS)
        try:
            return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in fields.items()})
        except (TypeError, AttributeError, TorchinferError) as exc:
            raise WeightsError(f"{path}: metadata {META_PREPROCESS!r} is not a preprocessing "
                               f"config ({exc})") from exc
    cfg = PreprocessConfig.default()
    hw = input_shape[2:4] if len(input_shape) == 4 else []
    if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw):
        cfg = cfg.with_overrides(input_size=(int(hw[0]), int(hw[1])))  # type: ignore[arg-type]
    return cfg


def _json(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc
