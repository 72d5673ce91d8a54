"""The heads of a multi-head model: which output each reads, as which task, with which labels
and options, and how one head's output becomes that task's results.

A head is written in a model card (``ModelCard.heads``), a head file (YAML or JSON: a list of
heads, or ``{"heads": [...]}``), or on the command line as ``NAME=TASK[:PART...]``::

    cls=classify:labels.txt          labels from a file (one name per line, or JSON)
    seg=segment:voc                  a named label set: voc, coco, coco80, imagenet
    det=detect:yolov8:conf=0.3       a decoder, and an option of the task
    det=detect:output=boxes          the model output it reads (default: the head's name)

Each head's results are its single-task predictor's: the same functions turn the same output
into the same record (``classify.classification_results``, ``segment.segmentation_results``,
``yolo.decode`` then ``detect.detections_result``). Every head sees one input geometry, a
letterbox (the only resize that keeps both the boxes' and the masks' geometry): a
segmentation head's logits are cropped to the image's part of it before they are upsampled
to the original size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import OptionError, TorchinferError, first_line
from ..manifests import TaskOption, manifests, task_manifest
from ..models import read_labels
from ..results import Detections, Result
from .classify import classification_results
from .detect import detections_result
from .registry import task_spec
from .segment import Window, segmentation_results
from .yolo import DECODERS, DEFAULT_IOU, Letterbox, RawDetections, decode, guess_decoder

AUTO = "auto"


def head_tasks() -> tuple[str, ...]:
    """The tasks a head may have: those whose manifest says so."""
    return tuple(m.name for m in manifests() if m.head)


def head_options(task: str) -> dict[str, TaskOption]:
    """The options a head of ``task`` takes: its task's (defaults: the single-task predictor's,
    so a head left alone answers as that predictor would)."""
    return {o.name: o for o in task_manifest(task).options}


# Label sets known by name, read from torchvision's published weights metadata (no download)
_LABEL_SETS = {"voc": "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
               "coco": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
               "imagenet": "ResNet50_Weights.IMAGENET1K_V1"}


def label_set(name: str) -> tuple[str, ...]:
    """A named label set: voc (21, background first), coco (torchvision's 91 ids, with N/A),
    coco80 (the 80 classes YOLO models are trained on), imagenet (1000)."""
    from torchvision.models import get_weight

    if name == "coco80":
        return tuple(c for c in label_set("coco") if c not in ("__background__", "N/A"))
    return tuple(get_weight(_LABEL_SETS[name]).meta["categories"])


@dataclass(frozen=True)
class Head:
    """One head: ``output`` names the model output it reads (a dict key, a named tuple's
    field, or a position "0", "1"... of a tuple); ``options`` are its task's (``head_options``)."""

    name: str
    task: str
    output: str
    labels: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, key: str) -> Any:
        return self.options.get(key, head_options(self.task)[key].default)

    def to_dict(self) -> dict[str, Any]:
        """The head as a model card or a head file writes it."""
        out: dict[str, Any] = {"name": self.name, "task": self.task, "output": self.output}
        if self.labels is not None:
            out["labels"] = list(self.labels)
        if self.options:
            out["options"] = dict(self.options)
        return out


def make_head(data: Mapping[str, Any], where: str = "head") -> Head:
    """A checked Head from its JSON form ({"name", "task", "output", "labels", "options"})."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise TorchinferError(f"{where}: every head needs a name, got {name!r}")
    task = data.get("task")
    if task not in head_tasks():
        raise TorchinferError(f"{where}: head {name!r} has unknown task {task!r}: use one of "
                              f"{', '.join(head_tasks())}")
    output = data.get("output", name)
    if not isinstance(output, str) or not output:
        raise TorchinferError(f"{where}: head {name!r}: 'output' must name a model output")
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, (list, tuple))
                               or not all(isinstance(x, str) for x in labels)):
        raise TorchinferError(f"{where}: head {name!r}: 'labels' must be a list of names")
    unknown = sorted(set(data) - {"name", "task", "output", "labels", "options"})
    if unknown:
        raise TorchinferError(f"{where}: head {name!r} has unknown keys {', '.join(unknown)}")
    head = Head(name, task, output, tuple(labels) if labels is not None else None)
    return with_options(head, data.get("options") or {}, where)


def with_options(head: Head, options: Mapping[str, Any], where: str = "head") -> Head:
    """``head`` with ``options`` checked against its task's and laid over its own."""
    if not isinstance(options, Mapping):
        raise OptionError(f"{where}: options of head {head.name!r} must be an object")
    known = head_options(head.task)
    checked = dict(head.options)
    for key, value in options.items():
        if key not in known:
            raise OptionError(f"{where}: head {head.name!r} ({head.task}) has no option "
                              f"{key!r}: use {', '.join(known) or 'none'}")
        checked[key] = known[key].check(value, f"{where}: head {head.name!r}: ")
    return Head(head.name, head.task, head.output, head.labels, checked)


def make_heads(items: Sequence[Head | Mapping[str, Any]], where: str = "heads") -> tuple[Head, ...]:
    heads = tuple(h if isinstance(h, Head) else make_head(h, where) for h in items)
    if not heads:
        raise TorchinferError(f"{where}: no heads")
    names = [h.name for h in heads]
    if len(set(names)) != len(names):
        raise TorchinferError(f"{where}: head names must be unique, got {', '.join(names)}")
    return heads


def parse_head_argument(text: str) -> Head:
    """``NAME=TASK[:PART...]`` (see the module's docstring) -> a Head."""
    where = f"--head {text}"
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise OptionError(f"{where}: write NAME=TASK[:labels][:decoder][:key=value]..., e.g. "
                          "det=detect:coco80:yolov8")
    task, *parts = rest.split(":")
    data: dict[str, Any] = {"name": name, "task": task}
    options: dict[str, Any] = {}
    if task not in head_tasks():
        raise OptionError(f"{where}: unknown task {task!r}: use one of {', '.join(head_tasks())}")
    for part in parts:
        key, is_option, value = part.partition("=")
        if is_option and key == "output":
            data["output"] = value
        elif is_option:
            options[key] = _option_value(value)
        elif part in (*_LABEL_SETS, "coco80"):
            data["labels"] = list(label_set(part))
        elif task == "detect" and part in (AUTO, *DECODERS):
            options["decoder"] = part
        else:
            data["labels"] = read_labels(part)  # a labels file; its own error if unreadable
    data["options"] = options
    return make_head(data, where)


def _option_value(text: str) -> Any:
    """A command-line option value as JSON (3, 0.5, true, [1, 2]), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_head_file(path: str | Path) -> tuple[Head, ...]:
    """Heads from a YAML or JSON file: a list of heads, or an object with a "heads" list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TorchinferError(f"cannot read head file {path}: {exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)  # plain data only: no tags that build objects
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parser's error is the file's fault
        raise TorchinferError(f"head file {path} is not valid {path.suffix[1:].upper() or 'JSON'}: "
                              f"{first_line(exc)}") from None
    if isinstance(data, dict):
        data = data.get("heads")
    if not isinstance(data, list) or not all(isinstance(h, dict) for h in data):
        raise TorchinferError(f"head file {path}: expected a list of heads (objects with name, "
                              "task, output...)")
    return make_heads(data, str(path))


# --- reading a model's outputs ----------------------------------------------------------------

def named_outputs(raw: Any) -> dict[str, torch.Tensor]:
    """The model's outputs by name: a dict's keys, a named tuple's fields, else positions."""
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    if isinstance(raw, tuple) and hasattr(raw, "_fields"):
        return dict(zip(raw._fields, raw))
    if isinstance(raw, (tuple, list)):
        return {str(i): v for i, v in enumerate(raw)}
    return {"0": raw}


def check_heads(heads: Sequence[Head], raw: Any, model: str) -> None:
    """Refuse heads that do not fit the model's outputs (``raw``, from one forward): an output
    that is missing, a tensor of the wrong rank, a label count that does not match."""
    outputs = named_outputs(raw)
    for head in heads:
        if head.output not in outputs:
            raise TorchinferError(f"{model}: head {head.name!r} reads output {head.output!r}, "
                                  f"but the model's outputs are {', '.join(outputs)}")
        out = outputs[head.output]
        ranks = _BUILT_IN_RANKS.get(head.task) or task_spec(head.task).implementation.head_ranks
        if not isinstance(out, torch.Tensor) or out.ndim not in ranks:
            rank = " or ".join(map(str, ranks))
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TorchinferError(f"{model}: head {head.name!r} ({head.task}) needs a "
                                  f"{rank}-D output, but {head.output!r} is {shape}")
        classes = _class_count(head, out)
        if head.labels is not None and len(head.labels) != classes:
            raise TorchinferError(f"{model}: head {head.name!r} has {len(head.labels)} labels "
                                  f"but output {head.output!r} gives {classes} classes "
                                  f"(shape {tuple(out.shape)})")


# the output ranks of the heads this module reads; other tasks' say theirs (TaskImplementation)
_BUILT_IN_RANKS = {"classify": (2,), "segment": (4,), "detect": (3,)}


def _class_count(head: Head, out: torch.Tensor) -> int:
    if head.task != "detect":
        return int(out.shape[1])
    decoder = head.option("decoder")
    decoder = guess_decoder(out) if decoder == AUTO else decoder
    return int(out.shape[1] - 4) if decoder == "yolov8" else int(out.shape[2] - 5)


# --- one head's output -> its task's results -------------------------------------------------

def head_results(head: Head, output: torch.Tensor, sources: Sequence[str],
                 letterboxes: Sequence[Letterbox], input_size: tuple[int, int]) -> list[Result]:
    """One result per image of the batch from ``output``, the head's tensor for the batch,
    mapped back to each image through its letterbox into ``input_size`` (h, w)."""
    if head.task == "classify":
        return list(classification_results(output, sources, head.labels,
                                           top_k=head.option("top_k"),
                                           multi_label=head.option("multi_label")))
    if head.task == "segment":
        logits, sizes, windows = zip(*(image_part(output[i], lb, input_size)
                                       for i, lb in enumerate(letterboxes)))
        return list(segmentation_results(logits, sources, sizes, head.labels, windows=windows))
    if head.task == "detect":
        return list(_detections(head, output, sources, letterboxes))
    read = task_spec(head.task).implementation.read_head
    if read is None:
        raise TorchinferError(f"task {head.task} cannot be a head of a multi-head model")
    return read(head, output, sources, letterboxes, input_size)


def image_part(logits: torch.Tensor, lb: Letterbox, input_size: tuple[int, int]
               ) -> tuple[torch.Tensor, tuple[int, int], Window | None]:
    """(C, h, w) logits over the whole letterboxed input -> what ``segmentation_results``
    reads for the image: logits, the size to upsample them to, and the window of that which
    is the image (None: all of it).

    An image that fills the input is read as it is (what the single-task segmenter reads);
    otherwise the logits are brought to the input's resolution, as torchvision's segmenters do
    inside, and the padding is cut away in whole input pixels. When the image's part of the
    input is the image's own size (a letterbox that pads without scaling), that part is the
    answer: the logits go to ``segmentation_results`` with that window, which interpolates
    only the image's boundary pixels, not the padding's (where boundaries are everywhere, or
    for probabilities, it interpolates the whole input and cuts the window out, as before)."""
    height, width = input_size
    oh, ow = lb.original
    # letterbox()'s own rounding of the image's size inside the input
    nh, nw = max(1, round(oh * lb.scale)), max(1, round(ow * lb.scale))
    left, top = lb.pad
    if (left, top, nh, nw) == (0, 0, height, width):
        return logits, lb.original, None
    window = (slice(top, top + nh), slice(left, left + nw))
    if (nh, nw) == (oh, ow):
        return logits, input_size, window
    if tuple(logits.shape[1:]) != (height, width):
        logits = F.interpolate(logits[None].float(), size=(height, width), mode="bilinear",
                               align_corners=False)[0]
    return logits[:, window[0], window[1]], lb.original, None


def _detections(head: Head, output: torch.Tensor, sources: Sequence[str],
                letterboxes: Sequence[Letterbox]) -> list[Detections]:
    decoder = head.option("decoder")
    found = decode(output, guess_decoder(output) if decoder == AUTO else decoder,
                   conf=head.option("conf"),
                   iou=DEFAULT_IOU if head.option("iou") is None else head.option("iou"),
                   max_det=head.option("max_det"), classes=head.option("classes"))
    return [detections_result(source, lb.original,
                              RawDetections(lb.to_original(d.boxes), d.scores, d.class_ids),
                              head.labels, labels_from=f"the labels of head {head.name!r}")
            for source, d, lb in zip(sources, found, letterboxes)]
