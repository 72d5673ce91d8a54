"""Multi-head models: one forward, several heads (classify, segment, detect...) read from it."""

from __future__ import annotations

from .base import TaskManifest, TaskOption

MANIFEST = TaskManifest(
    name="multi",
    summary="Run a multi-head model: every head's result per image.",
    implementation="torchinfer.tasks.multi_task:TASK",
    # Python's: the heads and each head's options (the command line has --head); options of
    # the heads' tasks given once apply to every head that takes them (tasks.multi)
    options=(TaskOption(name="heads", type="any", default=None,
                        help="The heads (default: the model card's)."),
             TaskOption(name="head_options", type="any", default=None,
                        help="{head: {option: value}}.")),
    columns=("heads",), agreement="per head", takes_head_options=True)
