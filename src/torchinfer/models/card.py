"""A model's self-description, the ``ModelCard``, and its one encoding per file format.

Every file torchinfer writes or reads describes its model the same way: a safetensors header,
an ONNX file's ``metadata_props``, an OpenVINO IR's runtime info and a TorchScript archive's
extra file ``torchinfer.json`` all hold one map of strings with the same keys
(``card_strings``), each in its own wrapping (``card_formats``):

    ModelCard.from_safetensors_metadata(meta, source) / card.to_safetensors_metadata()
    ModelCard.from_onnx_metadata(meta, source)        / card.to_onnx_metadata()
    ModelCard.from_openvino_rt_info(text, source)     / card.to_openvino_rt_info()
    ModelCard.from_torchscript_json(text, source)     / card.to_torchscript_json()
    ModelCard.from_ultralytics_metadata(meta, source)   (Ultralytics' ONNX exports, read
                                                         only: ``card_ultralytics``)

A card read from a file is untrusted data: it is validated when it is made (``card_checks``:
types, JSON, no ``model_kwargs`` that would start a download), and its ``architecture`` is
only a name until ``models.registry.resolve_architecture`` allows it (see ``models.loader``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import WeightsError
from .card_checks import (
    check_model_kwargs,
    check_string_map,
    checked_heads,
    checked_input_size,
    checked_labels,
)
from .card_formats import (
    OPENVINO_RT_INFO_PATH,
    TORCHSCRIPT_EXTRA_FILE,
    openvino_rt_info,
    safetensors_metadata,
    strings_of_openvino_rt_info,
    strings_of_torchscript_json,
    torchscript_json,
)
from .card_strings import CARD_KEYS, FORMAT_KEY, card_fields, card_strings, version_package
from .card_ultralytics import is_ultralytics_metadata, ultralytics_card_fields
from .config import PreprocessConfig

__all__ = ["DETECTOR_FORMATS", "OPENVINO_RT_INFO_PATH", "PRECISIONS", "TORCHSCRIPT_EXTRA_FILE",
           "ModelCard", "is_ultralytics_metadata", "mark_set_prediction",
           "parse_set_prediction", "set_prediction_format"]

PRECISIONS = ("fp32", "fp16")
# "torchvision": one (3, H, W) image in, boxes/labels/scores out (exporters.detectors);
# "set-softmax", "set-sigmoid[-topK]": a DETR-family detector's queries, one (N, queries,
# classes + 4) tensor (``set_prediction_format``)
DETECTOR_FORMATS = ("torchvision", "set-softmax", "set-sigmoid", "set-sigmoid-topK")
_SET_FORMAT = re.compile(r"^set-(softmax|sigmoid)(?:-top([1-9][0-9]{0,5}))?$")


def set_prediction_format(scoring: str, top_k: int | None) -> str:
    """The ``detector_format`` of a set-prediction detector scoring classes with ``scoring``
    ("softmax" or "sigmoid") and keeping its ``top_k`` best query-class pairs."""
    return f"set-{scoring}" + (f"-top{top_k}" if top_k else "")


def mark_set_prediction(module: Any, card: ModelCard) -> None:
    """Give a file's module the ``set_prediction`` / ``top_k`` its card records, as the
    transformers detector it was exported from has them (``tasks.detect_sets`` reads them)."""
    found = parse_set_prediction(card.detector_format)
    if found is not None:
        module.set_prediction, module.top_k = found


def parse_set_prediction(detector_format: str | None) -> tuple[str, int | None] | None:
    """(scoring, top_k) of a set-prediction ``detector_format``, else None."""
    found = _SET_FORMAT.match(detector_format or "")
    if found is None:
        return None
    return found.group(1), int(found.group(2)) if found.group(2) else None


@dataclass(frozen=True)
class ModelCard:
    """What a model file says about its model. Every field may be absent (None / empty)."""

    architecture: str | None = None  # builder: a torchvision name, registered name or pkg.mod:fn
    model_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)  # JSON data
    task: str | None = None  # classify | segment | detect ...
    labels: tuple[str, ...] | None = None  # class names, by class index
    preprocess: PreprocessConfig | None = None
    model_name: str | None = None
    input_size: tuple[int, int] | None = None  # (h, w) the file takes; None: free or unknown
    precision: str = "fp32"  # what the file computes in
    detector_format: str | None = None  # how a detector's outputs are laid out (DETECTOR_FORMATS)
    # A multi-head model's heads, one JSON object each: {"name", "task", "output", "labels",
    # "options"} (tasks.heads reads and checks them against the model's outputs)
    heads: tuple[dict[str, Any], ...] | None = field(default=None, hash=False)
    versions: dict[str, str] = field(default_factory=dict, hash=False)  # package -> version
    # Anything else the writer recorded (provenance such as trained_by, dataset, seed),
    # kept as strings and written back unchanged.
    extra: dict[str, str] = field(default_factory=dict, hash=False)
    # Where the card was read from: named by every error about it. Not part of the card.
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = f"{self.source}: metadata" if self.source else "model card:"
        for name in ("architecture", "task", "model_name", "detector_format"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise WeightsError(f"{where} {name!r} must be a non-empty string, got {value!r}")
        check_model_kwargs(self.model_kwargs, where)
        if self.labels is not None:
            object.__setattr__(self, "labels", checked_labels(self.labels, where))
        if self.preprocess is not None and not isinstance(self.preprocess, PreprocessConfig):
            raise WeightsError(f"{where} 'preprocess' must be a PreprocessConfig, got "
                               f"{type(self.preprocess).__name__}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", checked_input_size(self.input_size, where))
        if self.heads is not None:
            object.__setattr__(self, "heads", checked_heads(self.heads, where))
        if self.precision not in PRECISIONS:
            raise WeightsError(f"{where} 'precision' must be one of {', '.join(PRECISIONS)}, "
                               f"got {self.precision!r}")
        if self.detector_format is not None and self.detector_format != "torchvision" and \
                parse_set_prediction(self.detector_format) is None:
            raise WeightsError(f"{where} 'detector_format' {self.detector_format!r} is not one "
                               f"this torchinfer reads ({', '.join(DETECTOR_FORMATS)})")
        check_string_map(self.versions, "versions", where)
        check_string_map(self.extra, "extra", where)
        taken = sorted(k for k in self.extra if k in CARD_KEYS or k == FORMAT_KEY
                       or version_package(k) is not None)
        if taken:
            raise WeightsError(f"{where} 'extra' may not hold {', '.join(taken)}: the card's "
                               "own keys")

    # --- encoders: the card's strings, in each format's wrapping ------------------------------

    def to_safetensors_metadata(self) -> dict[str, str]:
        """The header's ``__metadata__`` (``safetensors.torch.save_file(metadata=...)``)."""
        return safetensors_metadata(self._strings())

    def to_onnx_metadata(self) -> dict[str, str]:
        """The ONNX model's ``metadata_props``."""
        return self._strings()

    def to_openvino_rt_info(self) -> str:
        """The text kept in an OpenVINO IR's runtime info (``OPENVINO_RT_INFO_PATH``)."""
        return openvino_rt_info(self._strings())

    def to_torchscript_json(self) -> str:
        """The text of the archive's ``torchinfer.json`` (``TORCHSCRIPT_EXTRA_FILE``)."""
        return torchscript_json(self._strings())

    def _strings(self) -> dict[str, str]:
        return card_strings({f.name: getattr(self, f.name) for f in fields(self)})

    # --- decoders ----------------------------------------------------------------------------

    @classmethod
    def from_safetensors_metadata(cls, meta: Mapping[str, str] | None, source: str) -> ModelCard:
        """The card in a safetensors header (an empty card when it has none)."""
        return cls(**card_fields(meta or {}, source))

    @classmethod
    def from_onnx_metadata(cls, meta: Mapping[str, str], source: str) -> ModelCard:
        """The card in an ONNX file's ``metadata_props``: torchinfer's keys, or an Ultralytics
        export's (read by ``from_ultralytics_metadata``). A file with neither gives an empty
        card: the caller falls back on defaults."""
        if "preprocess" not in meta and is_ultralytics_metadata(meta):
            return cls.from_ultralytics_metadata(meta, source)
        return cls(**card_fields(meta, source))

    @classmethod
    def from_openvino_rt_info(cls, text: str, source: str) -> ModelCard:
        """The card in an OpenVINO IR's runtime info ("" when it has none: an empty card)."""
        return cls(**card_fields(strings_of_openvino_rt_info(text, source), source))

    @classmethod
    def from_torchscript_json(cls, text: str | bytes, source: str) -> ModelCard:
        """The card in a TorchScript archive's ``torchinfer.json`` ("" when the archive has
        none: an empty card)."""
        return cls(**card_fields(strings_of_torchscript_json(text, source), source))

    @classmethod
    def from_ultralytics_metadata(cls, meta: Mapping[str, str], source: str) -> ModelCard:
        """An Ultralytics ONNX export's metadata (``card_ultralytics``): its labels, task,
        letterbox or crop at its ``imgsz`` and version; its Ultralytics task in
        ``extra["yolo_task"]`` when torchinfer runs it as a detector."""
        return cls(**ultralytics_card_fields(meta, source))
