"""Past one machine: batch inference on Ray Data (``pip install 'torchinfer[ray]'``).

``torchinfer.distributed.predict(sources, task, model, out=...)`` (the CLI: ``torchinfer
predict <task> ... --engine ray``) writes the records a local ``torchinfer predict`` writes,
with the model run by a pool of Ray actors. Importing this package does not import Ray.
"""

from .job import RayPredictor, predict

__all__ = ["RayPredictor", "predict"]
