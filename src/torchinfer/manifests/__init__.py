"""Tasks as data: each task's manifest (name, options, table columns, OIP outputs, where its
code lives), readable without torch by the command line and the server. Built-in tasks have one
module here each; packages add theirs through the ``torchinfer.tasks`` entry points."""

from .base import OutputTensor, TaskManifest, TaskOption
from .registry import (
    ENTRY_POINT_GROUP,
    accepted_options,
    broken_tasks,
    forget_plugins,
    is_task,
    manifests,
    register_task,
    task_manifest,
    task_names,
)

__all__ = ["ENTRY_POINT_GROUP", "accepted_options", "OutputTensor", "TaskManifest", "TaskOption", "broken_tasks",
           "forget_plugins", "is_task", "manifests", "register_task", "task_manifest", "task_names"]
