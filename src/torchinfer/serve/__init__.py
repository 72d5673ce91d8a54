"""``torchinfer serve``: an HTTP server with dynamic batching, the Open Inference Protocol v2,
Prometheus metrics and a web page (needs the ``serve`` extra: FastAPI and uvicorn).

The public entry is small, so that other front ends (a Ray Serve replica) reuse it:

    config = ServeConfig(models=(ModelSpec("shapes_detector"),))
    app = build_app(config)          # a FastAPI app; its lifespan loads and drains the models
    holder = ModelHolder(spec, config); holder.load()    # one model, in a process of its own
    result, timing = await holder.predict_bytes(png_bytes, "name.png", {"conf": 0.3})

Importing this package imports neither torch nor FastAPI; ``build_app`` imports FastAPI. The
server's process never imports torch: each model runs in a process of its own (spawned;
``model_processes`` per model), which decodes, batches and runs requests; with
``model_processes=0`` the model runs on threads of the server's process instead.
"""

from __future__ import annotations

from typing import Any

from .config import ModelSpec, ServeConfig, read_config

__all__ = ["ModelHolder", "ModelSpec", "ServeConfig", "build_app", "read_config"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from .app import build_app
        return build_app
    if name == "ModelHolder":
        from .holder import ModelHolder
        return ModelHolder
    raise AttributeError(name)
