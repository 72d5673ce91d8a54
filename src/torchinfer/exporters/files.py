"""The exported file: written with its card, checked, and moved into place, or kept aside
under a name nobody loads by accident when it fails verification.

A model over 2 GB (protobuf's limit) keeps its weights in one ``<name>.onnx.data`` file beside
the graph; the two travel together (after a failed verification too: the data file keeps the
name the graph refers to).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..errors import MissingExtraError, first_line
from ..models import ModelCard
from .common import ExportError, ExportReport, ExportVerificationError


def write_onnx(raw: Path, out: Path, card: ModelCard) -> tuple[int, dict[str, str]]:
    """Write the exporter's ``raw`` file to ``out`` with ``card`` as its metadata, weights over
    2 GB in one ``<out name>.data`` file beside it; check it is valid ONNX. Returns its opset
    and the metadata written."""
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx") from exc
    model = onnx.load(str(raw), load_external_data=False)
    external = any(uses_external_data(t) for t in model.graph.initializer)
    if external:
        onnx.load_external_data_for_model(model, str(raw.parent))
    metadata = card.to_onnx_metadata()
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    if external:  # protobuf cannot hold over 2 GB: the weights go beside the graph
        onnx.save_model(model, str(out), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name(out))
    else:
        onnx.save_model(model, str(out))
    try:
        onnx.checker.check_model(str(out))  # by path, so it finds external data
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out.name}: the exporter wrote invalid ONNX: "
                          f"{first_line(exc)}") from exc
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return opset, metadata


def simplify_onnx(path: Path, name: str) -> None:
    """onnxsim in place, keeping the metadata; onnxsim checks the result itself by running
    both graphs on random inputs, and our verification then runs it on photographs."""
    try:
        import onnx
        import onnxsim
    except ImportError as exc:
        raise MissingExtraError("onnxsim", "simplify") from exc
    model = onnx.load(str(path))
    metadata = {p.key: p.value for p in model.metadata_props}
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors from its C++ core
        raise ExportError(f"{name}: onnxsim failed: {first_line(exc)}") from exc
    if not ok:
        raise ExportError(f"{name}: onnxsim's own check of the simplified graph failed")
    del simplified.metadata_props[:]
    for key, value in metadata.items():
        simplified.metadata_props.add(key=key, value=value)
    onnx.save_model(simplified, str(path))


def data_name(onnx_file: Path) -> str:
    return onnx_file.name + ".data"


def files_of(onnx_file: Path) -> list[Path]:
    """The file and, for a model over 2 GB, its external data."""
    data = onnx_file.with_name(data_name(onnx_file))
    return [onnx_file, data] if data.exists() else [onnx_file]


def move(staged: Path, path: Path) -> None:
    """Put the staged file (and its data) at ``path``; data first, so the graph never
    appears before the weights it points to. An OpenVINO IR's weights are the ``.bin`` named
    after its ``.xml``; an ONNX file's external data keeps the name its graph refers to."""
    if staged.suffix == ".xml":
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
        return
    data = staged.with_name(data_name(staged))
    if data.exists():
        os.replace(data, path.with_name(data.name))
    else:
        path.with_name(data_name(path)).unlink(missing_ok=True)  # an older export's
    os.replace(staged, path)


def fail_verification(report: ExportReport, staged: Path, path: Path) -> None:
    """Keep the file under a name nobody loads by accident, remove any older file at ``path``
    (it would no longer match this model), and raise with what differs."""
    unverified = path.with_name(f"{path.stem}.unverified{path.suffix or '.onnx'}")
    path.unlink(missing_ok=True)
    if path.suffix == ".xml":
        path.with_suffix(".bin").unlink(missing_ok=True)
    move(staged, unverified)
    report = replace(report, path=str(unverified))
    lines = [f"{path}: the {report.format} export of {report.model_name} does not compute what the "
             f"PyTorch model computes on {report.inputs} real images ({report.precision}, "
             f"allowed: {report.tolerance.describe()}):"]
    lines += [f"  {c.describe()}" for c in report.failures]
    if report.export_warnings:
        lines.append("  the tracer warned (a possible cause: a value computed from the dummy "
                     "input was frozen into the graph):")
        lines += [f"    {w}" for w in report.export_warnings]
    lines.append(f"  The file was kept as {unverified} for inspection; nothing was written "
                 f"to {path}.")
    raise ExportVerificationError("\n".join(lines), report, unverified)
