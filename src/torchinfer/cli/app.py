"""The ``torchinfer`` command: a thin layer over library calls.

Exit codes: 0 all inputs succeeded; 1 some inputs failed (``--allow-failures`` makes that 0);
2 a usage or configuration error (unknown model, unreadable weights, missing device).

The commands live in ``predict.py``, ``evaluate.py`` and ``tools.py``; each turns its
parameters into one options object (``options.py``) and imports torch only when it runs, so
``--help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.markup import escape

from ..errors import TorchinferError
from .evaluate import add_generated_commands, eval_app
from .multi import eval_multi, predict_multi
from .params import EXIT_CONFIG_ERROR, err_console
from .predict import predict_app
from .search import duplicates_cmd, search_cmd
from .serve import serve
from .tools import COMMANDS

app = typer.Typer(help="PyTorch inference: preprocess -> model -> postprocess.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
predict_app.command("multi")(predict_multi)
eval_app.command("multi")(eval_multi)
add_generated_commands()
app.add_typer(predict_app, name="predict")
app.add_typer(eval_app, name="eval")
app.command("serve")(serve)
app.command("search")(search_cmd)
app.command("duplicates")(duplicates_cmd)


def main() -> None:
    sys.exit(run())


def run(args: Optional[list[str]] = None) -> int:
    """Run the command line ``args`` (default: the process's); return the exit code. Every
    user mistake ends in one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(args=args, standalone_mode=False)
    except typer.Abort:
        code = 1
    except TorchinferError as exc:
        # one line, as written: file names and hints may hold [brackets]
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        code = EXIT_CONFIG_ERROR
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        code = _report_usage_error(exc)
    return code if isinstance(code, int) else 0


def _is_usage_error(exc: Exception) -> bool:
    # typer keeps click's exception classes private (typer.BadParameter is the one it
    # exports), so usage errors are told by their interface: a message and an exit code
    return callable(getattr(exc, "format_message", None)) and \
        isinstance(getattr(exc, "exit_code", None), int)


def _report_usage_error(exc: Exception) -> int:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        typer.echo(ctx.get_help())  # a bare command shows its help, as before
        return 0
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}{where}",  # type: ignore[attr-defined]
                      highlight=False, soft_wrap=True)
    return int(exc.exit_code)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
