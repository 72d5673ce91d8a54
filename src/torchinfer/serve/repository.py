"""The model repository extension of the Open Inference Protocol: which models a server may
load, and their states (``POST /v2/repository/index``, ``.../models/{name}/load``,
``.../unload``).

The loadable models are the entries of the folders the server was started with
(``--model-repository DIR``, repeatable): model files by their suffix, and model folders (a
timm or transformers ``config.json``), each named after its file or folder. A request names
one of them, never a path: nothing outside those folders is read, and a request cannot pass a
configuration or files of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import OptionError

MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".safetensors", ".torchscript", ".ts", ".jit", ".xml")


def repository_models(folders: tuple[str, ...]) -> dict[str, Path]:
    """name -> path of every loadable model in ``folders``; OptionError for a folder that is
    not one, or a name two entries share."""
    found: dict[str, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise OptionError(f"model repository {folder} is not a folder")
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            loadable = (entry.is_file() and entry.suffix.lower() in MODEL_SUFFIXES) or \
                (entry.is_dir() and (entry / "config.json").is_file())
            if not loadable:
                continue
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", entry.stem if entry.is_file()
                          else entry.name)[:64]
            if name in found:
                raise OptionError(f"model repository: {entry} and {found[name]} are both "
                                  f"named {name}")
            found[name] = entry.resolve()
    return found
