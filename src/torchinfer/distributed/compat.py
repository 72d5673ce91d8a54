"""What differs between the Ray versions we run on, decided in one place.

``ray[data]`` is an optional extra: nothing here imports Ray at module level, so importing
``torchinfer.distributed`` costs nothing until a job starts, and a missing Ray is a one-line
error naming the extra.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import TorchinferError

# The oldest Ray the [ray] extra allows; older ones lack DataContext.wait_for_min_actors_s.
MIN_RAY = (2, 40)


def import_ray() -> Any:
    """The ``ray`` module, or TorchinferError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the batch job's engine; ray[data] pulls pyarrow)
    except ImportError as exc:
        raise TorchinferError(f"--engine ray needs Ray Data: pip install 'torchinfer[ray]' "
                              f"({exc})") from None
    if ray_version(ray.__version__) < MIN_RAY:
        raise TorchinferError(f"Ray {ray.__version__} is too old for --engine ray: "
                              f"pip install 'ray[data]>={'.'.join(map(str, MIN_RAY))}'")
    return ray


def ray_version(text: str) -> tuple[int, int]:
    """``"2.60.0"`` -> (2, 60); a development build ("3.0.0.dev0") reads as its numbers."""
    found = re.match(r"(\d+)\.(\d+)", text)
    if found is None:
        raise TorchinferError(f"cannot read the Ray version {text!r}")
    return int(found.group(1)), int(found.group(2))


def actor_pool_form(version: tuple[int, int]) -> str:
    """How ``map_batches`` wants a fixed pool of callable-class actors sized in this version:
    "compute" (``compute=ActorPoolStrategy(size=n)``: before 2.9, and again from 2.51, where
    ``concurrency=`` is deprecated) or "concurrency" (``concurrency=n``: 2.9 to 2.50, where
    ``compute=`` was the deprecated one)."""
    return "concurrency" if (2, 9) <= version < (2, 51) else "compute"


def actor_pool_args(size: int, version: tuple[int, int] | None = None) -> dict[str, Any]:
    """The ``map_batches`` keyword arguments for a fixed pool of ``size`` actors, in the form
    the installed Ray (or ``version``) wants, so it logs no deprecation warning."""
    ray = import_ray()
    form = actor_pool_form(version or ray_version(ray.__version__))
    if form == "concurrency":
        return {"concurrency": size}
    return {"compute": ray.data.ActorPoolStrategy(size=size)}


def restart_args(restarts: int, version: tuple[int, int] | None = None) -> dict[str, Any]:
    """``map_batches`` keyword arguments bounding how often a dead worker is started again and
    its batch retried (Ray Data's default is for ever). Passed as plain Ray remote arguments,
    which Ray deprecates from 2.60 and drops in 2.64 without a named replacement: from then
    on, Ray's default stands and the job's stall timeout is what ends a job whose workers keep
    dying."""
    if (version or ray_version(import_ray().__version__)) >= (2, 64):
        return {}
    return {"max_restarts": restarts, "max_task_retries": restarts}


def map_batches(ds: Any, fn: Any, **kwargs: Any) -> Any:
    """``ds.map_batches(fn, **kwargs)``, without the deprecation warning that ``restart_args``
    draws in Ray 2.60-2.63 (the filter is restored on return)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(fn, **kwargs)


def spread_over_nodes(context: Any) -> None:
    """A block goes to the least busy worker, wherever it runs. With actor locality on (Ray
    Data's default), every block goes to a worker on the node its read task ran on, and the
    cluster's other nodes stand idle (measured on two nodes: one worker of three used); a
    block is a few images' bytes, cheap to move. Ray 2.60 deprecates the option ("Ray Data
    manages actor locality internally"), so its warning is kept out of the job's output; once
    the option is gone, Ray's own placement stands."""
    import warnings

    options = context.execution_options
    if not hasattr(options, "actor_locality_enabled"):
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*actor_locality_enabled.* is deprecated")
        options.actor_locality_enabled = False
