"""Where each file format keeps a model card's map of strings (``card_strings``), and how:

    safetensors   the header's ``__metadata__``: the map, with ``format: pt``
    ONNX          the model's ``metadata_props``: the map as it is
    OpenVINO      the IR's runtime info at ``OPENVINO_RT_INFO_PATH``: the map as JSON text
    TorchScript   the archive's extra file ``torchinfer.json``: the map as JSON text, with
                  ``format: torchscript``

Reading gives the map back (an empty one when the file holds none), checked to be one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..errors import WeightsError
from .card_strings import FORMAT_KEY

# The TorchScript archive's extra file that holds the card (``torch.jit.save(_extra_files=)``).
TORCHSCRIPT_EXTRA_FILE = "torchinfer.json"
# where an OpenVINO IR keeps the card: its runtime info, under these keys
OPENVINO_RT_INFO_PATH = ("torchinfer", "card")
# The container's own ``format``: safetensors files say "pt" (what other safetensors readers
# look for), TorchScript cards "torchscript".
SAFETENSORS_FORMAT = "pt"
TORCHSCRIPT_FORMAT = "torchscript"


def safetensors_metadata(strings: Mapping[str, str]) -> dict[str, str]:
    """The header's ``__metadata__`` (``safetensors.torch.save_file(metadata=...)``)."""
    return {FORMAT_KEY: SAFETENSORS_FORMAT, **strings}


def openvino_rt_info(strings: Mapping[str, str]) -> str:
    """The text kept in an OpenVINO IR's runtime info (``OPENVINO_RT_INFO_PATH``)."""
    return json.dumps(dict(strings))


def torchscript_json(strings: Mapping[str, str]) -> str:
    """The text of the archive's ``torchinfer.json`` (``TORCHSCRIPT_EXTRA_FILE``)."""
    return json.dumps({**strings, FORMAT_KEY: TORCHSCRIPT_FORMAT})


def strings_of_openvino_rt_info(text: str, source: str) -> dict[str, str]:
    """The map in an OpenVINO IR's runtime info ("" when it has none: an empty map)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{source}: unreadable torchinfer runtime info ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise WeightsError(f"{source}: torchinfer runtime info must be a JSON object of "
                           "strings")
    return data


def strings_of_torchscript_json(text: str | bytes, source: str) -> dict[str, str]:
    """The map in a TorchScript archive's ``torchinfer.json`` ("" when the archive has none:
    an empty map)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{source}: unreadable {TORCHSCRIPT_EXTRA_FILE} ({exc})") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{source}: {TORCHSCRIPT_EXTRA_FILE} must hold a JSON object, "
                           f"got {type(data).__name__}")
    # torchinfer writes strings (JSON inside for lists); a value written as JSON itself reads
    # the same
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
