"""mkdocs hooks: the reference pages made from the code at build time, so they cannot drift
from it (none of them is a file in docs/):

- reference/cli.md: every command of the typer app with its options and their help;
- reference/records.md: the record ``predict`` writes for each task, made by running the
  bundled models on a bundled photograph, and the record's JSON Schema;
- reference/model-card.md: the model card's JSON Schema, from its dataclass;
- reference/errors.md: the error classes and the exit codes.

tests/test_docs.py imports this module to check that every command and option has help.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from typing import Any


def cli_commands() -> Iterator[tuple[str, Any]]:
    """Every command of the command line, by its full name ("torchinfer predict classify"):
    click-style command objects (typer carries its own copy of click, so they are told by
    their attributes, not by click's classes)."""
    import typer

    from torchinfer.cli.app import app

    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        if getattr(command, "commands", None) is not None:
            for name in sorted(command.commands):
                yield from walk(command.commands[name], f"{path} {name}")
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), "torchinfer")


def arguments_of(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "argument"]


def options_of(command: Any) -> list[Any]:
    """The options a user sees (``--help`` is not a parameter)."""
    return [p for p in command.params if p.param_type_name == "option" and not p.hidden]


def _cell(text: str | None) -> str:
    """Help text as one table cell: on one line, its pipes and brackets escaped (a [NAME]
    in help would otherwise read as a link)."""
    text = " ".join((text or "").split())
    for char in "|[]":
        text = text.replace(char, "\\" + char)
    return text


def render_cli() -> str:
    lines = ["# Command line", "",
             "Every command and option, generated from the command line itself when this site "
             "is built. `torchinfer COMMAND --help` prints the same.", ""]
    for path, command in cli_commands():
        lines += [f"## `{path}`", "", inspect.cleandoc(command.help or ""), ""]
        arguments = arguments_of(command)
        if arguments:
            lines += ["| argument | what it is |", "|---|---|"]
            lines += [f"| `{a.name.upper()}` | {_cell(getattr(a, 'help', None))} |"
                      for a in arguments]
            lines.append("")
        options = options_of(command)
        if options:
            lines += ["| option | default | what it does |", "|---|---|---|"]
            for option in options:
                flags = ", ".join(f"`{f}`" for f in (*option.opts, *option.secondary_opts))
                default = option.default if not callable(option.default) else None
                shown = "" if default in (None, (), []) or option.is_flag and default is False \
                    else f"`{default}`"
                lines.append(f"| {flags} | {shown} | {_cell(option.help)} |")
            lines.append("")
    return "\n".join(lines)


def _json_block(value: Any) -> list[str]:
    return ["```json", json.dumps(value, indent=2, ensure_ascii=False), "```", ""]


def example_records() -> dict[str, dict[str, Any]]:
    """The record predict writes, per task: the command run on a bundled photograph with each
    task's bundled model, its predictions.jsonl read back."""
    import tempfile
    from pathlib import Path

    from torchinfer.assets import photograph_paths
    from torchinfer.cli.app import run

    photo = str(photograph_paths(("astronaut.png",))[0])
    models = {"classify": "shapes_classifier", "segment": "shapes_segmenter",
              "detect": "shapes_detector", "multi": "shapes_multitask",
              "depth": "shapes_depth", "embed": "shapes_embed"}
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        for task, model in models.items():
            folder = Path(scratch) / task
            code = run(["predict", task, photo, "-m", model, "--out", str(folder), "--quiet",
                        "--device", "cpu"])
            if code != 0:
                raise RuntimeError(f"predict {task} -m {model} exited with {code}")
            line = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()[0]
            record = json.loads(line)
            record["source"] = Path(record["source"]).name  # not this machine's folders
            out[task] = shortened(record)
    return out


def shortened(value: Any, items: int = 4) -> Any:
    """Long lists cut to their first ``items`` (the page shows the shape, not the data)."""
    if isinstance(value, list):
        head = [shortened(v, items) for v in value[:items]]
        return head + (["..."] if len(value) > items else [])
    if isinstance(value, dict):
        return {k: shortened(v, items) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 4)
    return value


def render_records() -> str:
    from torchinfer.serve.schema import FailedRecord, Record

    lines = ["# Records", "",
             "`torchinfer predict` writes one JSON record per input to `predictions.jsonl`; the "
             "server's `/v1/models/{name}/predict` answers with the same record. The examples "
             "below are what the bundled models write for `astronaut.png`, made when this "
             "site was built (lists cut to four items).", ""]
    for task, record in example_records().items():
        lines += [f"## {task}", ""] + _json_block(record)
    lines += ["## An input that cannot be read", "",
              "The run goes on; its record names the error (exit code 1 at the end).", ""]
    lines += ["## JSON Schema", "", "Every record:", ""] + _json_block(Record.model_json_schema())
    lines += ["A failed input's record:", ""] + _json_block(FailedRecord.model_json_schema())
    return "\n".join(lines)


def render_model_card() -> str:
    from pydantic import TypeAdapter

    from torchinfer.models.card import ModelCard

    return "\n".join(["# Model card", "",
                      "What a model file carries about itself: architecture, task, labels and "
                      "preprocessing. Stored in safetensors metadata, ONNX `metadata_props`, "
                      "OpenVINO IR runtime info or a TorchScript file's extra files "
                      "([Your own model](../guides/your-own-model.md)). Its JSON Schema, from "
                      "the dataclass:", ""]
                     + _json_block(TypeAdapter(ModelCard).json_schema()))


def render_errors() -> str:
    from torchinfer import errors
    from torchinfer.cli.params import EXIT_CONFIG_ERROR, EXIT_INPUT_FAILED

    lines = ["# Errors and exit codes", "",
             "The command line never prints a traceback for a mistake: one line on stderr "
             "saying what and where, and an exit code.", "",
             "| exit code | when |", "|---|---|",
             "| 0 | every input was processed |",
             f"| {EXIT_INPUT_FAILED} | some inputs could not be processed (each has its record "
             "with its error; the run went on) |",
             f"| {EXIT_CONFIG_ERROR} | a user mistake: an option, a model, weights, data, a "
             "file that cannot be read |", "",
             "## Error classes", "",
             "The library raises these; all are `torchinfer.TorchinferError`.", "",
             "| class | base | raised when |", "|---|---|---|"]
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.TorchinferError) and cls.__module__ == errors.__name__:
            base = cls.__bases__[0].__name__
            lines.append(f"| `{name}` | `{base}` | {_cell(inspect.getdoc(cls))} |")
    return "\n".join(lines) + "\n"


GENERATED: dict[str, Callable[[], str]] = {
    "reference/cli.md": render_cli,
    "reference/records.md": render_records,
    "reference/model-card.md": render_model_card,
    "reference/errors.md": render_errors,
}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for uri, render in GENERATED.items():
        files.append(File.generated(config, uri, content=render()))
    return files
