"""What the ``torchinfer`` commands share: consoles, exit codes, options, argument parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

EXIT_INPUT_FAILED = 1  # some inputs could not be processed
EXIT_CONFIG_ERROR = 2  # bad usage, model, weights or data


def parse_floats(text: Optional[str], what: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_size(text: Optional[str]) -> Optional[int | tuple[int, int]]:
    if text is None:
        return None
    try:
        parts = [int(x) for x in text.replace("x", ",").split(",")]
    except ValueError:
        raise typer.BadParameter(f"--input-size must be N or H,W, got {text!r}") from None
    if min(parts) < 1:
        raise typer.BadParameter(f"--input-size must be positive, got {text!r}")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise typer.BadParameter(f"--input-size must be N or H,W, got {text!r}")


def parse_model_kwargs(text: Optional[str]) -> Optional[dict[str, Any]]:
    """``image_size=518,dropout=0.1`` or a JSON object: keyword arguments for the model's
    builder. Values are read as JSON when they parse (numbers, true/false, lists), else kept as
    text."""
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--model-kwargs is not a JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise typer.BadParameter("--model-kwargs must be a JSON object or k=v,k=v")
        return value
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise typer.BadParameter(f"--model-kwargs must be k=v,k=v, got {item!r}")
        try:
            kwargs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key.strip()] = raw
    return kwargs


def parse_class_ids(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--classes must be comma-separated class ids, got {text!r}") \
            from None
    if min(ids) < 0:
        raise typer.BadParameter(f"--classes must be class ids >= 0, got {text!r}")
    return ids


def load_options(*, input_size: Optional[str] = None, mean: Optional[str] = None,
                 std: Optional[str] = None, model_kwargs: Optional[str] = None,
                 **options: Any) -> dict[str, Any]:
    """``ti.load`` keyword arguments from a command's options: the text ones parsed (size,
    mean, std, model kwargs), the others as they are."""
    return dict(input_size=parse_size(input_size), mean=parse_floats(mean, "--mean"),
                std=parse_floats(std, "--std"), model_kwargs=parse_model_kwargs(model_kwargs),
                **options)


# Options the `predict` and `eval` commands share, declared once.
Sources = Annotated[list[str], typer.Argument(help="Images, videos, folders, globs or .txt lists.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="torchvision name, "
                     "pkg.module:factory, or a TorchScript file.")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", "-w", help="Local file "
                       "(.pth/.pt/.safetensors/TorchScript) or DEFAULT / a torchvision weights "
                       "name. Omitted: random initialisation.")]
NumClassesOpt = Annotated[Optional[int], typer.Option(min=1, help="Output classes (inferred from the "
                          "weights when omitted).")]
LabelsOpt = Annotated[Optional[Path], typer.Option(help="Class names: .txt (one per line) or .json.")]
InputSizeOpt = Annotated[Optional[str], typer.Option(help="Model input size: N or H,W (the crop "
                         "for classification, the resize for segmentation, the letterbox for "
                         "raw-tensor detectors).")]
MeanOpt = Annotated[Optional[str], typer.Option(help="Normalisation mean, e.g. 0.5,0.5,0.5.")]
StdOpt = Annotated[Optional[str], typer.Option(help="Normalisation std.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
BatchOpt = Annotated[Optional[int], typer.Option(help="Images per forward pass "
                     "(default: 4 on CPU, 32 on a GPU).", min=1)]
TrustOpt = Annotated[bool, typer.Option(help="Allow weights files that hold pickled Python "
                     "objects (can run code: only for files you trust).")]
TrustCodeOpt = Annotated[bool, typer.Option(help="Allow a model file's metadata to name an "
                         "architecture that is neither torchvision's nor registered (importing "
                         "it runs code: only for files you trust).")]
ModelKwargsOpt = Annotated[Optional[str], typer.Option(help="Keyword arguments for the model's "
                           "builder: k=v,k=v or JSON, e.g. image_size=518.")]
StrictOpt = Annotated[bool, typer.Option(help="Require every weight key to match.")]
MaxPixelsOpt = Annotated[Optional[int], typer.Option(help="Refuse images with more pixels "
                         "(default: Pillow's decompression-bomb limit).", min=1)]
SaveVisOpt = Annotated[bool, typer.Option(help="Write vis/<name>.jpg: the result drawn on the image.")]
AllowFailuresOpt = Annotated[bool, typer.Option(help="Exit 0 even if some inputs failed.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress.")]
ExistOkOpt = Annotated[bool, typer.Option(help="Reuse an --out folder that holds an earlier "
                       "run: its results are removed first, so nothing stale stays beside the "
                       "new ones (without it, such a folder is refused).")]
ResumeOpt = Annotated[bool, typer.Option(help="Keep the lines of an earlier (or interrupted) "
                      "run into --out whose file is unchanged; run only the rest.")]
BackendOpt = Annotated[str, typer.Option(help="What runs the model: torch, torchscript (frozen), "
                       "onnxruntime (exported once, cached) or auto (the fastest, measured on "
                       "the first batch).")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, bf16 or fp16; reduced precision is "
                         "verified against fp32 on photographs.")]
VerifyBackendOpt = Annotated[bool, typer.Option(help="Check a backend/precision (and JPEG draft "
                             "decoding) against fp32 PyTorch on photographs before using it.")]
VideoStrideOpt = Annotated[int, typer.Option(help="Video inputs: every Nth frame.", min=1)]
DecodeWorkersOpt = Annotated[Optional[int], typer.Option(help="Threads decoding ahead of the "
                             "model, which gets the other cores; 0: decode on the calling thread "
                             "(default: on a CPU measured on the first batches, on a GPU up to "
                             "8).", min=0)]
