"""``torchinfer view``: the seed's last export step, looking at the graph in Netron.

Netron is an optional extra (``pip install 'torchinfer[view]'``). A model that is not an ONNX
file yet is exported first, verified like any export, into the cache (so viewing it twice
exports once).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError


def serve(model: str, weights: str | None = None, *, port: int = 8080, browse: bool = True,
          console: Any = None) -> str:
    """Serve ``model`` in Netron on localhost:``port`` (in a background thread) and return the
    URL. Keep the process alive for as long as the page should work."""
    try:
        import netron
    except ImportError as exc:
        raise MissingExtraError("netron", "view") from exc
    path = Path(model)
    if not (path.is_file() and path.suffix.lower() == ".onnx"):
        path = _export_for_viewing(model, weights, console)
    host, bound = netron.start(str(path), address=("localhost", port), browse=browse)
    return f"http://{host}:{bound}"


def _export_for_viewing(model: str, weights: str | None, console: Any) -> Path:
    from ..api import export
    from ..runtime.memo import cache_dir

    # the weights file's size and mtime in the name: a changed file is exported again
    stamp = "random"
    if weights:
        w = Path(weights)
        stamp = f"{w.name}-{w.stat().st_size}-{int(w.stat().st_mtime)}" if w.is_file() else w.name
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(model).name}-{stamp}")
    out = cache_dir() / "view" / f"{tag}.onnx"
    if not out.is_file():
        if console is not None:
            console.print(f"exporting {model} to {out} (verified) ...", highlight=False)
        export(model, out, weights)
    return out
