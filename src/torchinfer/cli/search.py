"""``torchinfer search`` and ``torchinfer duplicates``: over the vectors of a ``predict embed``
run (``torchinfer.retrieval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import OptionError
from .params import EXIT_INPUT_FAILED, DeviceOpt, JsonOpt, console, err_console

MethodOpt = Annotated[str, typer.Option(help="exact (every vector), ann (the HNSW index, "
                                        "built and saved beside the vectors; needs the search "
                                        "extra) or auto: exact up to 100,000 vectors.")]


def search_cmd(
    queries: Annotated[list[str], typer.Argument(help="Images to embed with the index's model, "
                                                 "inputs the index holds, or row numbers.")],
    index: Annotated[Path, typer.Option(help="A predict embed output folder.")],
    k: Annotated[int, typer.Option("-k", help="Neighbours per query.", min=1, max=10_000)] = 10,
    method: MethodOpt = "auto", device: DeviceOpt = "auto", as_json: JsonOpt = False,
) -> None:
    """Nearest neighbours by cosine similarity in a run's vectors."""
    from ..retrieval import search

    if method not in ("auto", "exact", "ann"):
        raise OptionError(f"--method must be auto, exact or ann, got {method!r}")
    asked = [int(q) if q.isdigit() and not Path(q).exists() else q for q in queries]
    results = search(asked, index, k=k, method=method, device=device)
    failed = 0
    for result in results:
        failed += result.error is not None
        if as_json:
            from ..runner.sinks import dumps

            console.print(dumps(result.to_dict()), markup=False, highlight=False, soft_wrap=True)
            continue
        if result.error is not None:
            err_console.print(f"[red]{escape(result.query)}: {escape(result.error)}[/]")
            continue
        table = Table("#", "similarity", "row", "source", title=escape(result.query))
        for rank, match in enumerate(result.matches, 1):
            table.add_row(str(rank), f"{match.similarity:.4f}", str(match.row),
                          escape(match.source))
        console.print(table)
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def duplicates_cmd(
    index: Annotated[Path, typer.Argument(help="A predict embed output folder.")],
    threshold: Annotated[Optional[float], typer.Option(
        help="Cosine similarity at or above which two inputs are duplicates (default 0.93; "
             "it depends on the model: the report shows how near each input's nearest is).",
        min=-1.0, max=1.0)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: "
                                                "INDEX/duplicates).")] = None,
    sheets: Annotated[bool, typer.Option(help="A contact sheet per group.")] = True,
    method: MethodOpt = "auto", as_json: JsonOpt = False,
) -> None:
    """Near-duplicate pairs and groups among a run's inputs: pairs.jsonl, groups.jsonl and a
    contact sheet per group."""
    from ..retrieval import DEFAULT_THRESHOLD, duplicates

    report = duplicates(index, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                        out=out, sheets=sheets, method=method)
    summary = {"images": report.images, "threshold": report.threshold,
               "pairs": len(report.pairs), "groups": len(report.groups),
               "largest_group": max((len(g) for g in report.groups), default=0),
               "nearest_similarity": report.nearest, "files": report.files}
    if as_json:
        import json

        console.print(json.dumps(summary), markup=False, highlight=False, soft_wrap=True)
        return
    near = ", ".join(f"{k} {v}" for k, v in report.nearest.items())
    console.print(f"{report.images} inputs, {len(report.pairs)} pairs at cosine >= "
                  f"{report.threshold:g} in {len(report.groups)} groups (largest "
                  f"{summary['largest_group']}); each input's nearest other: {near}",
                  highlight=False)
    console.print(f"-> {escape(report.files['groups'])}", highlight=False)
