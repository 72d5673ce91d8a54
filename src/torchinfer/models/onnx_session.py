"""ONNX Runtime sessions made one way for every caller.

Session options are chosen on purpose (see ``make_session``) and shared: export verification,
predictors and benchmarks all measure the same configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..devices import usable_cpus
from ..errors import DeviceError, MissingExtraError, TorchinferError

if TYPE_CHECKING:
    import onnxruntime

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"

# How sessions that predictors run are made (see make_session's allow_spinning).
PREDICTOR_SESSION = {"allow_spinning": True}


def import_onnxruntime() -> Any:
    """onnxruntime, or an error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx") from exc
    return onnxruntime


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
    providers = providers_for(device, ort.get_available_providers())
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind classes (Fail, InvalidGraph, ...)
        raise TorchinferError(f"{path}: onnxruntime cannot load it: {exc}") from exc


def providers_for(device: str, available: list[str]) -> list[Any]:
    """The execution providers, in order of preference, that run on ``device`` (see
    ``make_session``), or an error naming what this onnxruntime build lacks."""
    spec = device.strip().lower()
    if spec == "cpu":
        return [CPU_PROVIDER]
    if spec == "auto":
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    if spec == "tensorrt" or spec == "cuda" or spec.startswith("cuda:"):
        if CUDA_PROVIDER not in available:
            raise DeviceError(f"device {device!r} requested but this onnxruntime has no "
                              f"{CUDA_PROVIDER} (it has {', '.join(available)}): "
                              "pip install onnxruntime-gpu")
        index = int(spec.split(":", 1)[1]) if spec.startswith("cuda:") else 0
        chosen: list[Any] = [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER]
        if spec == "tensorrt":
            if TENSORRT_PROVIDER not in available:
                raise DeviceError(f"device 'tensorrt' requested but this onnxruntime has no "
                                  f"{TENSORRT_PROVIDER} (it has {', '.join(available)})")
            chosen.insert(0, TENSORRT_PROVIDER)
        return chosen
    raise DeviceError(f"unsupported onnxruntime device {device!r}: use auto, cpu, cuda, "
                      "cuda:N or tensorrt")
