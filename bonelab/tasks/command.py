"""``bonelab train TASK ...``: each task of :data:`bonelab.tasks.TASKS` adds its own options."""

from __future__ import annotations

import argparse


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per task: ``bonelab train wrist --data DIR --out RUN ...``."""
    from bonelab.tasks import TASKS, task

    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name in TASKS:
        module = task(name)
        p = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(task_run=module.run)


def run_train(args) -> int:
    """Run ``bonelab train TASK`` from parsed arguments."""
    return args.task_run(args)
