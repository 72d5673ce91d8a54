"""What the ``torchinfer`` commands share: consoles, exit codes, and the typer declarations of
the options more than one command takes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console

from ..errors import OptionError
from ..manifests import TaskOption

console = Console()
err_console = Console(stderr=True)

EXIT_INPUT_FAILED = 1  # some inputs could not be processed
EXIT_CONFIG_ERROR = 2  # bad usage, model, weights or data

T = TypeVar("T")


def parsed(build: Callable[..., T], /, **params: object) -> T:
    """``build(**params)`` (an options class's ``from_cli``), its mistakes made usage errors:
    the command's name and ``--help`` go with the one line, as typer's own checks do."""
    try:
        return build(**params)
    except OptionError as exc:
        raise typer.BadParameter(str(exc)) from None


def option_parameter(option: TaskOption, **override: Any) -> inspect.Parameter:
    """A task option (its manifest's) as a command parameter: typed, with its help, range and
    default (``default=`` in ``override`` replaces it: None, "what the command's library call
    uses"). Closed choices and class ids are checked by the option itself, after parsing."""
    default = override.get("default", option.default)
    kind: Any = {"int": int, "float": float, "bool": bool, "str": str, "ids": str}[option.type]
    if default is None:
        kind = Optional[kind]
    limits = {"min": option.minimum, "max": option.maximum} if option.type in ("int", "float") \
        else {}
    help_text = option.help + (f" One of {', '.join(option.choices)}." if option.choices
                               and ", ".join(option.choices) not in option.help else "")
    annotation = Annotated[kind, typer.Option(help=help_text, **limits)]
    return inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation,
                             default=default)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

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
BackendOpt = Annotated[Optional[str], typer.Option(help="What runs the model: auto (the default: "
                       "the fastest verified backend, measured once per model and machine and "
                       "remembered), torch, torchscript, onnxruntime, openvino, or a plugin's.",
                       show_default=False)]
PrecisionOpt = Annotated[Optional[str], typer.Option(help="auto (the default: fp32, and bf16 "
                         "where the CPU runs it natively and its answers agree), fp32, bf16 or "
                         "fp16; reduced precision is verified against fp32 on photographs.",
                         show_default=False)]
CalibrationOpt = Annotated[Optional[Path], typer.Option(help="A folder of the pictures the model "
                           "will see (a few hundred): makes OpenVINO int8 (NNCF's post-training "
                           "quantisation on them) a candidate, kept only where its answers "
                           "agree with fp32 (extra: openvino).")]
VerifyBackendOpt = Annotated[bool, typer.Option(help="Check a backend/precision (and reduced "
                             "JPEG decoding) against fp32 PyTorch on photographs before using it.")]
ExactDecodeOpt = Annotated[bool, typer.Option(help="Decode every pixel of big JPEGs, as "
                           "torchvision's reference does (default: libjpeg's 1/2-1/8 scaling, "
                           "never below twice the model's resize, checked on photographs).")]
VideoStrideOpt = Annotated[int, typer.Option(help="Video inputs: every Nth frame.", min=1)]
DecodeWorkersOpt = Annotated[Optional[int], typer.Option(help="Threads decoding ahead of the "
                             "model, which gets the other cores; 0: decode on the calling thread "
                             "(default: on a CPU measured on the first batches, on a GPU up to "
                             "8).", min=0)]
