"""Tasks: what a network learns (loss, metrics with their direction, example inputs).

``classification`` (the default) and ``causal_lm`` are built in; a task of yours is a ``Task``
subclass named by import path (``task: "pkg.module:MyTask"``) or given as ``task=``.
"""

from raysparse.tasks import causal_lm, classification  # noqa: F401  (registers them)
from raysparse.tasks.base import MAX, MIN, Task, TaskOptions, call, logits_of, move
from raysparse.tasks.registry import DEFAULT_TASK, TASKS, build_task, get_task_class, task_name

__all__ = ["DEFAULT_TASK", "MAX", "MIN", "TASKS", "Task", "TaskOptions", "build_task", "call", "get_task_class",
           "logits_of", "move", "task_name"]
