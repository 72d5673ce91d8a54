"""A task's manifest: what the command line, the server, Ray and multi-head models know of a
task without importing torch, and where the task's code lives.

    MANIFEST = TaskManifest(
        name="depth", summary="Estimate depth: a map per image at its own size.",
        implementation="mypkg.depth:TASK",                 # imported only to run it
        options=(TaskOption(name="depth_kind", type="str", default="relative",
                            choices=("relative", "metric"), help="..."),),
        columns=("min", "median", "max"))

Options are typed and checked here, once, for every caller: a command-line flag, a server
request's query or JSON, a multi-head model's head options and ``ti.load(...)`` keywords all go
through :meth:`TaskOption.check`. A server request may set only the options marked
``per_request``, as a transformers pipeline's ``_sanitize_parameters`` splits its call options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError

OPTION_TYPES = ("int", "float", "bool", "str", "ids", "any")
# an OIP output tensor as the encoder gives it: (datatype, shape, flat data)
# an OIP output: its datatype, shape and values, flattened in row-major order (a list) or as
# a numpy array of that shape (large outputs: masks, maps, vectors)
Tensor = tuple[str, list[int], Any]
Encoder = Callable[[Sequence[Any]], dict[str, Tensor]]


@dataclass(frozen=True, kw_only=True)
class TaskOption:
    """One option of a task: ``type`` is int, float, bool, str (``choices`` if closed), ids
    (a list of class ids, None for all) or any (Python values only, unchecked here: no
    command-line flag). ``default`` is what the predictor uses when it is not
    given; ``per_request``: a server request may set it for its own images."""

    name: str
    type: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    per_request: bool = False

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name}: type must be one of {OPTION_TYPES}")
        if not self.name.isidentifier():
            raise ValueError(f"option {self.name!r}: the name must be an identifier")

    @property
    def flag(self) -> str:
        """The command-line flag: ``--top-k`` for ``top_k``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, where: str = "") -> Any:
        """``value`` typed and checked; text (a query string, a form, a command line) is
        parsed. An OptionError says what was expected."""
        try:
            typed = _PARSERS[self.type](value)
        except (TypeError, ValueError):
            raise OptionError(f"{where}{self.name}={value!r}: expected {_EXPECTED[self.type]}") \
                from None
        if typed is None:
            return None
        if self.choices and typed not in self.choices:
            raise OptionError(f"{where}{self.name}={value!r}: use one of {', '.join(self.choices)}")
        numbers = typed if self.type == "ids" else (typed,) if self.type in ("int", "float") else ()
        low, high = self.minimum, self.maximum
        for number in numbers:
            if (low is not None and number < low) or (high is not None and number > high):
                wanted = (f"in [{_num(low)}, {_num(high)}]" if low is not None and high is not None
                          else f">= {_num(low)}" if low is not None else f"<= {_num(high)}")
                raise OptionError(f"{where}{self.name} must be {wanted}, got {value!r}")
        return typed

    def to_dict(self) -> dict[str, Any]:
        """The option as the server describes it (the page builds its controls from it)."""
        out = {"name": self.name, "type": self.type, "default": json_form(self.default),
               "help": self.help}
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class OutputTensor:
    """An output of the Open Inference Protocol: its name, datatype and shape (-1: varies).

    narrower: the smaller integer datatypes a client may ask for instead (the output's
    ``parameters.datatype``), the padding (-1) then being the type's largest value: a
    segmentation mask as UINT8 is a quarter of its INT32 bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    narrower: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TaskManifest:
    """Everything about a task that is known before torch is imported.

    implementation: ``"module:attribute"`` of its ``tasks.TaskImplementation`` (predictors,
    evaluation, drawing), imported when the task runs. options: its own, beyond those every
    predictor takes. columns: the titles of a result's row in ``predict``'s table. outputs and
    encode: its OIP output tensors and the function that fills them from results (every task
    also answers ``record``, the JSON record). agreement: what export verification compares
    beyond the tolerance ("top-1", "pixel", "per head" or None). head: whether it can be one
    head of a multi-head model; takes_head_options: whether it takes the options of its heads'
    tasks, given once for every head (a multi-head model). eval_data: the options naming
    ``eval``'s labelled data; eval_help: the layout ``--data`` reads; eval_summary: what
    ``eval`` reports; eval_options: the options of ``eval`` beyond the model's (depth's
    ``max_depth``, the parts a dataset may be given in: segment's ``split``). save_options:
    ``predict``'s options of what it writes beyond the records (``save_masks``).
    reads_models_of: the tasks whose models this one runs too (embed reads a classifier's
    pre-logits features). run_files: the files a ``predict`` run of this task writes in its
    output folder beyond every task's (embed's ``embeddings.npy``): ``--exist-ok`` replaces
    them, ``--resume`` keeps them.
    """

    name: str
    summary: str
    implementation: str
    options: tuple[TaskOption, ...] = ()
    columns: tuple[str, ...] = ()
    outputs: tuple[OutputTensor, ...] = ()
    encode: Encoder | None = None
    agreement: str | None = None
    head: bool = False
    takes_head_options: bool = False
    eval_data: tuple[str, ...] = ("data",)
    eval_help: str = ""
    eval_summary: str = ""
    eval_options: tuple[TaskOption, ...] = ()
    save_options: tuple[TaskOption, ...] = ()
    reads_models_of: tuple[str, ...] = ()
    run_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"task {self.name!r}: the name must be an identifier")
        module, sep, attribute = self.implementation.partition(":")
        if not (sep and module and attribute):
            raise ValueError(f"task {self.name}: implementation must be 'module:attribute'")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name}: an option is declared twice")
        for file in self.run_files:
            if not file or "/" in file or "\\" in file or file.startswith("."):
                raise ValueError(f"task {self.name}: run file {file!r} must be a plain name")

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def option(self, name: str) -> TaskOption:
        for option in self.options:
            if option.name == name:
                return option
        raise OptionError(f"{name} is not an option of {self.name} (it takes "
                          f"{', '.join(self.option_names) or 'none'})")

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def check_options(self, values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """``values`` checked and typed; a name that is not the task's is refused."""
        return {key: self.option(key).check(value, where) for key, value in values.items()}

    def request_options(self, values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """The options one server request may set, checked: the others are refused."""
        allowed = tuple(o.name for o in self.options if o.per_request)
        for key in values:
            if key not in allowed:
                raise OptionError(f"{where}unknown option {key!r} (it takes "
                                  f"{', '.join(allowed) or 'no options'})")
        return self.check_options(values, where)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary,
                "options": [o.to_dict() for o in self.options],
                "request_options": [o.name for o in self.options if o.per_request],
                "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                            for t in self.outputs],
                "head": self.head}


def checked_values(declared: Sequence[TaskOption], values: Mapping[str, Any],
                   unknown: str) -> dict[str, Any]:
    """``values`` typed and checked against the ``declared`` options, None ones left out (the
    default); a name not declared is refused with ``unknown`` (``{name}`` in it replaced)."""
    by_name = {o.name: o for o in declared}
    for name in values:
        if name not in by_name:
            raise OptionError(unknown.format(name=name))
    return {k: by_name[k].check(v) for k, v in values.items() if v is not None}


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    number = float(value)
    if number != number:  # NaN passes every range check
        raise ValueError
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _ids(value: Any) -> tuple[int, ...] | None:
    if value is None or value == "":
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(_int(v.strip() if isinstance(v, str) else v) for v in items)


_PARSERS: dict[str, Callable[[Any], Any]] = {"int": _int, "float": _float, "bool": _bool,
                                             "str": _str, "ids": _ids, "any": lambda v: v}
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
             "ids": "class ids, e.g. 0,2", "any": "a value"}


def _num(value: float | None) -> str:
    assert value is not None
    return str(int(value)) if float(value).is_integer() else str(value)


def json_form(value: Any) -> Any:
    """An option's value as JSON gives it back (a tuple as a list): how a description shows it
    and how a run's fingerprint holds it."""
    return list(value) if isinstance(value, tuple) else value
