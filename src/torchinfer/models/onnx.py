"""ONNX files as models: ``load_onnx_model("model.onnx")`` gives a ``LoadedModel`` whose module
is an ``OrtModule`` (or ``OrtDetector``): a parameter-free ``nn.Module`` whose ``forward`` feeds
the tensor to an ONNX Runtime session. Task, labels and preprocessing come from the file's
``ModelCard`` (written by ``torchinfer.exporters.onnx.export_onnx``, or Ultralytics' exporter),
so a file runs by its path alone with the preprocessing it was made for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import TorchinferError
from .card import ModelCard, mark_set_prediction
from .config import PreprocessConfig
from .loaded import LoadedModel
from .onnx_session import CPU_PROVIDER, PREDICTOR_SESSION, make_session, usable_cpus

if TYPE_CHECKING:
    import onnxruntime

# ONNX Runtime's type strings for the input types OrtModule can feed
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(double)": np.float64}


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
                or self.session.get_providers()[0] != CPU_PROVIDER:
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

    def __init__(self, session: onnxruntime.InferenceSession, source: str = "<session>", *,
                 named_outputs: bool = False):
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
        # a multi-head file: every output, by name (what a multi-head model's dict gives)
        self.named_outputs = named_outputs

    def forward(self, x: torch.Tensor) -> Any:
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
                pieces.append([o[:len(array) - i] for o in self._run(piece)])  # padding dropped
            outputs = [torch.cat(parts) for parts in zip(*pieces)]
        else:
            outputs = self._run(array)
        if self.named_outputs:
            return {name: out.to(x.device) for name, out in zip(self.output_names, outputs)}
        return outputs[0].to(x.device)

    def _run(self, array: np.ndarray) -> list[torch.Tensor]:
        wanted = self.output_names if self.named_outputs else self.output_names[:1]
        try:
            outs = self.session.run(wanted, {self.input_name: array})
        except Exception as exc:  # ORT's pybind errors: wrong rank, shape, type
            raise TorchinferError(f"{self.source}: onnxruntime failed on an input of shape "
                                  f"{tuple(array.shape)} (the model takes "
                                  f"{self.input_shape}): {exc}") from exc
        # float32 like the PyTorch model it replaces, also for an fp16 file
        return [torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)) for out in outs]


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

    Task, labels, model name and preprocessing come from the file's card. A file without one
    (exported by something else) gets torchvision's ImageNet preprocessing, cropped to the
    input's static height and width when the graph has them, no labels and no task.
    """
    path = Path(path)
    session = make_session(path, device=device, **PREDICTOR_SESSION)
    card = ModelCard.from_onnx_metadata(dict(session.get_modelmeta().custom_metadata_map),
                                        str(path))
    name = card.model_name or path.stem
    labels = list(card.labels) if card.labels is not None else None
    if card.detector_format == "torchvision":  # it resizes and normalises inside
        return LoadedModel(module=OrtDetector(session, str(path)), name=name, task="detect",
                           preprocess=card.preprocess or PreprocessConfig.default(),
                           labels=labels, weights=str(path), weights_format="onnx",
                           preprocess_from="weights" if card.preprocess else "default")
    module = OrtModule(session, str(path), named_outputs=card.heads is not None)
    mark_set_prediction(module, card)
    preprocess = card.preprocess or _default_preprocess(module.input_shape)
    return LoadedModel(module=module, name=name, task=card.task, preprocess=preprocess,
                       labels=labels, weights=str(path), weights_format="onnx",
                       heads=card.heads)


def _default_preprocess(input_shape: list[int | str | None]) -> PreprocessConfig:
    """torchvision's classification defaults, cropped to the graph's static (h, w) if any."""
    cfg = PreprocessConfig.default()
    hw = input_shape[2:4] if len(input_shape) == 4 else []
    if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw):
        cfg = cfg.with_overrides(input_size=(int(hw[0]), int(hw[1])))  # type: ignore[arg-type]
    return cfg
