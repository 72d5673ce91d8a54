"""A model's self-description, the ``ModelCard``, and its one encoding per file format.

Every file torchinfer writes or reads describes its model the same way: a safetensors header,
an ONNX file's ``metadata_props`` and a TorchScript archive's extra file ``torchinfer.json``
are all string-to-string maps with the same keys (``architecture``, ``model_kwargs``,
``task``, ``labels``, ``preprocess``, ``model_name``, ``input_size``, ``precision``,
``detector_format``, ``<package>_version``; JSON where the value is not a string). The
codecs here are the only code that knows those keys:

    ModelCard.from_safetensors_metadata(meta, source) / card.to_safetensors_metadata()
    ModelCard.from_onnx_metadata(meta, source)        / card.to_onnx_metadata()
    ModelCard.from_torchscript_json(text, source)     / card.to_torchscript_json()
    ModelCard.from_ultralytics_metadata(meta, source)   (Ultralytics' ONNX exports; read only)

A card read from a file is untrusted data: it is validated here (types, JSON, no
``model_kwargs`` that would start a download), and its ``architecture`` is only a name until
``models.registry.resolve_architecture`` allows it (see ``models.loader``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import TorchinferError, WeightsError
from .config import MAX_INPUT_SIDE, PreprocessConfig

# The TorchScript archive's extra file that holds the card (``torch.jit.save(_extra_files=)``).
TORCHSCRIPT_EXTRA_FILE = "torchinfer.json"
# where an OpenVINO IR keeps the card: its runtime info, under these keys
OPENVINO_RT_INFO_PATH = ("torchinfer", "card")
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
# Keyword arguments that make a builder fetch weights: a file may not start a download.
DOWNLOADING_KWARGS = frozenset({"weights", "weights_backbone", "pretrained",
                                "pretrained_backbone", "progress"})

# The container's own key: safetensors files say "pt" (what other safetensors readers look
# for), TorchScript cards "torchscript". Written by each encoder, never part of the card.
_FORMAT_KEY = "format"
_FORMATS = {"safetensors": "pt", "torchscript": "torchscript"}
# Versions are stored as "<package>_version", except torch's in the bundled models' headers.
_VERSION_KEYS = {"torch": "torch"}
_VERSION_SUFFIX = "_version"


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
        where = self._where
        for name in ("architecture", "task", "model_name", "detector_format"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise WeightsError(f"{where} {name!r} must be a non-empty string, got {value!r}")
        self._check_model_kwargs()
        if self.labels is not None:
            if not isinstance(self.labels, (list, tuple)) or \
                    not all(isinstance(x, str) for x in self.labels):
                raise WeightsError(f"{where} 'labels' must be a list of names (strings)")
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.preprocess is not None and not isinstance(self.preprocess, PreprocessConfig):
            raise WeightsError(f"{where} 'preprocess' must be a PreprocessConfig, got "
                               f"{type(self.preprocess).__name__}")
        if self.input_size is not None:
            size = self.input_size
            if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size):
                raise WeightsError(f"{where} 'input_size' must be [height, width] in positive "
                                   f"ints, got {size!r}")
            object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        if self.heads is not None:
            self._check_heads()
        if self.precision not in PRECISIONS:
            raise WeightsError(f"{where} 'precision' must be one of {', '.join(PRECISIONS)}, "
                               f"got {self.precision!r}")
        if self.detector_format is not None and self.detector_format != "torchvision" and \
                parse_set_prediction(self.detector_format) is None:
            raise WeightsError(f"{where} 'detector_format' {self.detector_format!r} is not one "
                               f"this torchinfer reads ({', '.join(DETECTOR_FORMATS)})")
        for name in ("versions", "extra"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise WeightsError(f"{where} {name!r} must map names to strings")
        taken = sorted(k for k in self.extra if k in _CARD_KEYS or k == _FORMAT_KEY
                       or _version_package(k) is not None)
        if taken:
            raise WeightsError(f"{where} 'extra' may not hold {', '.join(taken)}: the card's "
                               "own keys")

    @property
    def _where(self) -> str:
        return f"{self.source}: metadata" if self.source else "model card:"

    def _check_model_kwargs(self) -> None:
        kwargs, where = self.model_kwargs, self._where
        if not isinstance(kwargs, dict):
            raise WeightsError(f"{where} 'model_kwargs' must be a JSON object, got "
                               f"{type(kwargs).__name__}")
        try:
            json.dumps(kwargs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{where} 'model_kwargs' must be JSON data ({exc})") from exc
        asked = sorted(DOWNLOADING_KWARGS & kwargs.keys())
        if asked:
            raise WeightsError(f"{where} 'model_kwargs' asks for {', '.join(asked)}: a "
                               "file's own weights are loaded, never downloaded ones")
        # image sizes a builder resizes to inside the model (a detector's min_size/max_size,
        # ViT's image_size): bounded like the preprocessing, since every image pays for them
        sizes = {k: v for k, v in kwargs.items() if "size" in k and isinstance(v, (int, float))
                 and not isinstance(v, bool) and v > MAX_INPUT_SIDE}
        if sizes:
            raise WeightsError(f"{where} 'model_kwargs' asks for image sizes {sizes}: at most "
                               f"{MAX_INPUT_SIDE} pixels a side")

    def _check_heads(self) -> None:
        """Heads are JSON data of the right shapes here; which tasks and outputs they name is
        checked where the model's outputs are known (``tasks.heads``)."""
        heads, where = self.heads, self._where
        if not isinstance(heads, (list, tuple)) or not heads or \
                not all(isinstance(h, dict) for h in heads):
            raise WeightsError(f"{where} 'heads' must be a non-empty list of JSON objects")
        for head in heads:
            for key in ("name", "task", "output"):
                if not isinstance(head.get(key), str) or not head[key]:
                    raise WeightsError(f"{where} every head needs a non-empty string {key!r}, "
                                       f"got {head.get(key)!r}")
            labels = head.get("labels")
            if labels is not None and (not isinstance(labels, list)
                                       or not all(isinstance(x, str) for x in labels)):
                raise WeightsError(f"{where} head {head['name']!r}: 'labels' must be a list of "
                                   "names (strings)")
            if not isinstance(head.get("options", {}), dict):
                raise WeightsError(f"{where} head {head['name']!r}: 'options' must be a JSON "
                                   "object")
            unknown = sorted(set(head) - {"name", "task", "output", "labels", "options"})
            if unknown:
                raise WeightsError(f"{where} head {head['name']!r} has unknown keys "
                                   f"{', '.join(unknown)}")
        names = [h["name"] for h in heads]
        if len(set(names)) != len(names):
            raise WeightsError(f"{where} head names must be unique, got {names}")
        object.__setattr__(self, "heads", tuple(dict(h) for h in heads))

    # --- encoders ----------------------------------------------------------------------------

    def to_safetensors_metadata(self) -> dict[str, str]:
        """The header's ``__metadata__`` (``safetensors.torch.save_file(metadata=...)``)."""
        return {_FORMAT_KEY: _FORMATS["safetensors"], **self._strings()}

    def to_onnx_metadata(self) -> dict[str, str]:
        """The ONNX model's ``metadata_props``."""
        return self._strings()

    def to_openvino_rt_info(self) -> str:
        """The text kept in an OpenVINO IR's runtime info (``OPENVINO_RT_INFO_PATH``)."""
        return json.dumps(self._strings())

    def to_torchscript_json(self) -> str:
        """The text of the archive's ``torchinfer.json`` (``TORCHSCRIPT_EXTRA_FILE``)."""
        return json.dumps({**self._strings(), _FORMAT_KEY: _FORMATS["torchscript"]})

    def _strings(self) -> dict[str, str]:
        """Every set field as a string (JSON for lists and objects); absent ones left out."""
        out: dict[str, str] = {}
        for name in ("architecture", "task", "model_name"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.model_kwargs:
            out["model_kwargs"] = json.dumps(self.model_kwargs)
        if self.labels is not None:
            out["labels"] = json.dumps(list(self.labels))
        if self.preprocess is not None:
            out["preprocess"] = json.dumps(self.preprocess.to_dict())
        if self.input_size is not None:
            out["input_size"] = json.dumps(list(self.input_size))
        out["precision"] = self.precision
        if self.detector_format is not None:
            out["detector_format"] = self.detector_format
        if self.heads is not None:
            out["heads"] = json.dumps(list(self.heads))
        for package, version in self.versions.items():
            out[_VERSION_KEYS.get(package, package + _VERSION_SUFFIX)] = version
        return {**out, **self.extra}

    # --- decoders ----------------------------------------------------------------------------

    @classmethod
    def from_safetensors_metadata(cls, meta: Mapping[str, str] | None, source: str) -> ModelCard:
        """The card in a safetensors header (an empty card when it has none)."""
        return cls._from_strings(dict(meta or {}), source)

    @classmethod
    def from_onnx_metadata(cls, meta: Mapping[str, str], source: str) -> ModelCard:
        """The card in an ONNX file's ``metadata_props``: torchinfer's keys, or an Ultralytics
        export's (read by ``from_ultralytics_metadata``). A file with neither gives an empty
        card: the caller falls back on defaults."""
        if "preprocess" not in meta and is_ultralytics_metadata(meta):
            return cls.from_ultralytics_metadata(meta, source)
        return cls._from_strings(dict(meta), source)

    @classmethod
    def from_openvino_rt_info(cls, text: str, source: str) -> ModelCard:
        """The card in an OpenVINO IR's runtime info ("" when it has none: an empty card)."""
        if not text:
            return cls(source=source)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{source}: unreadable torchinfer runtime info ({exc})") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise WeightsError(f"{source}: torchinfer runtime info must be a JSON object of "
                               "strings")
        return cls._from_strings(data, source)

    @classmethod
    def from_torchscript_json(cls, text: str | bytes, source: str) -> ModelCard:
        """The card in a TorchScript archive's ``torchinfer.json`` ("" when the archive has
        none: an empty card)."""
        if not text:
            return cls(source=source)
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WeightsError(f"{source}: unreadable {TORCHSCRIPT_EXTRA_FILE} ({exc})") from exc
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: {TORCHSCRIPT_EXTRA_FILE} must hold a JSON object, "
                               f"got {type(data).__name__}")
        # torchinfer writes strings (JSON inside for lists); a value written as JSON itself
        # reads the same
        return cls._from_strings({str(k): v if isinstance(v, str) else json.dumps(v)
                                  for k, v in data.items()}, source)

    @classmethod
    def from_ultralytics_metadata(cls, meta: Mapping[str, str], source: str) -> ModelCard:
        """An Ultralytics ONNX export's metadata (``str()`` of Python values: names
        ``"{0: 'person', ...}"``, imgsz ``"[640, 640]"``): labels from ``names``, the letterbox
        (detect, segment, pose, obb) or resize + crop (classify) at ``imgsz`` with inputs in
        [0, 1] and no mean/std (Ultralytics' preprocessing), the task, and the Ultralytics
        version. Segment, pose and obb files are torchinfer detectors (masks, keypoints and
        rotated boxes are fields of their detections): their Ultralytics task stays in
        ``extra["yolo_task"]``, beside ``kpt_shape`` and ``kpt_names`` as written."""
        task = meta.get("task", "detect")
        if task not in _ULTRALYTICS_TASKS:
            raise TorchinferError(f"{source}: an Ultralytics {task!r} model; torchinfer runs "
                                  f"Ultralytics exports of task {', '.join(_ULTRALYTICS_TASKS)}")
        if task == "pose" and not meta.get("kpt_shape"):
            raise WeightsError(f"{source}: an Ultralytics pose model without 'kpt_shape' in its "
                               "metadata: expected kpt_shape [K, 2] or [K, 3] (e.g. [17, 3])")
        try:
            names = ast.literal_eval(meta["names"])
            imgsz = ast.literal_eval(meta["imgsz"])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise WeightsError(f"{source}: Ultralytics metadata 'names'/'imgsz' unreadable "
                               f"({exc})") from exc
        if isinstance(names, dict):  # {0: 'person', 1: 'bicycle', ...}
            if set(names) != set(range(len(names))):
                raise WeightsError(f"{source}: Ultralytics 'names' ids are not 0..{len(names) - 1}")
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, (list, tuple)):
            raise WeightsError(f"{source}: Ultralytics 'names' must be a list or an id -> name "
                               f"dict, got {type(names).__name__}")
        sizes = [imgsz] * 2 if isinstance(imgsz, int) else imgsz
        if not isinstance(sizes, (list, tuple)) or len(sizes) not in (1, 2) or \
                not all(isinstance(s, int) for s in sizes):
            raise WeightsError(f"{source}: Ultralytics 'imgsz' must be a size or [h, w], got "
                               f"{meta['imgsz']!r}")
        h, w = sizes[0], sizes[-1]
        unit = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # Ultralytics feeds [0, 1]
        try:
            if _ULTRALYTICS_TASKS[task] == "detect":
                preprocess = PreprocessConfig(resize_size=(h, w), crop_size=None,
                                              mean=unit["mean"], std=unit["std"])
            else:
                preprocess = PreprocessConfig(resize_size=(min(h, w),), crop_size=(h, w),
                                              mean=unit["mean"], std=unit["std"])
        except TorchinferError as exc:
            raise WeightsError(f"{source}: Ultralytics 'imgsz' {meta['imgsz']!r}: {exc}") from exc
        versions = {"ultralytics": meta["version"]} if "version" in meta else {}
        rest = {k: v for k, v in meta.items()
                if k not in _ULTRALYTICS_KEYS and k not in _CARD_KEYS and k != _FORMAT_KEY}
        if task in _ULTRALYTICS_HEADS:
            rest["yolo_task"] = task
        return cls(task=_ULTRALYTICS_TASKS[task], labels=tuple(str(n) for n in names),
                   preprocess=preprocess, input_size=(h, w), versions=versions, extra=rest,
                   source=source)

    @classmethod
    def _from_strings(cls, meta: dict[str, str], source: str) -> ModelCard:
        meta.pop(_FORMAT_KEY, None)

        def text(key: str) -> str | None:
            value = meta.pop(key, None)
            return value or None  # an empty value says nothing

        def data(key: str) -> Any:
            raw = meta.pop(key, None)
            if raw is None or raw == "":
                return None
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, TypeError) as exc:
                raise WeightsError(f"{source}: metadata {key!r} is not valid JSON ({exc})") from exc

        kwargs = data("model_kwargs")
        card = dict(architecture=text("architecture"), task=text("task"),
                    model_name=text("model_name"), detector_format=text("detector_format"),
                    precision=text("precision") or "fp32",
                    model_kwargs={} if kwargs is None else kwargs, labels=data("labels"),
                    preprocess=_preprocess(data("preprocess"), source),
                    input_size=data("input_size"), heads=data("heads"))
        versions = {package: meta.pop(key) for key in list(meta)
                    if (package := _version_package(key)) is not None}
        return cls(**card, versions=versions, extra=meta, source=source)


def is_ultralytics_metadata(meta: Mapping[str, str]) -> bool:
    """Whether ONNX metadata is the kind Ultralytics' exporter writes."""
    return "names" in meta and "imgsz" in meta and (
        str(meta.get("author", "")).startswith("Ultralytics") or "stride" in meta)


def _version_package(key: str) -> str | None:
    """The package whose version ``key`` holds, or None for another key."""
    named = next((p for p, k in _VERSION_KEYS.items() if k == key), None)
    if named is None and key.endswith(_VERSION_SUFFIX) and len(key) > len(_VERSION_SUFFIX):
        named = key.removesuffix(_VERSION_SUFFIX)
    return named


def _preprocess(value: Any, source: str) -> PreprocessConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WeightsError(f"{source}: metadata 'preprocess' must be a JSON object, got "
                           f"{type(value).__name__}")
    try:
        return PreprocessConfig.from_dict(value)
    except TorchinferError as exc:
        raise WeightsError(f"{source}: metadata 'preprocess' is not a preprocessing config "
                           f"({exc})") from exc


# The keys the card's own fields are stored under.
_CARD_KEYS = frozenset(f.name for f in fields(ModelCard)) - {"versions", "extra", "source"}
# Ultralytics task -> torchinfer task. Segment, pose and obb heads add rows after the classes
# (mask coefficients, keypoints, an angle) that the YOLO decoders read (tasks.yolo_heads).
_ULTRALYTICS_HEADS = ("segment", "pose", "obb")
_ULTRALYTICS_TASKS = {"detect": "detect", **dict.fromkeys(_ULTRALYTICS_HEADS, "detect"),
                      "classify": "classify"}
# What from_ultralytics_metadata turns into card fields.
_ULTRALYTICS_KEYS = frozenset({"names", "imgsz", "task", "version"})
