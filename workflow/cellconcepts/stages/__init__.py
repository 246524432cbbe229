"""One function per Snakemake rule, named as the rule: it opens the rule's declared inputs, calls
the domain code, and writes the rule's declared outputs.

A reader goes rule X (``workflow/rules/<group>.smk``) -> ``workflow/scripts/X.py`` ->
``cellconcepts.stages.<group>.X``. Stage functions take the rule's named inputs, outputs and
params as keyword arguments (file paths, never folders), and can be called from Python or a
notebook as well. Kept import-light: the CellProfiler environment imports this package too.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from cellconcepts.logs import log_to_file
from cellconcepts.stages.execution import execution_settings


def arguments(stage: Callable[..., Any], job: Any) -> dict[str, Any]:
    """Keyword arguments of ``stage`` from a Snakemake job (the ``snakemake`` object of a rule
    script): its named inputs, outputs and params; ``threads``; and ``execution``, the config
    keys that change how the job runs but never what it computes
    (`stages.execution.execution_settings`), read from the config at run time so that editing
    them reruns nothing."""
    available: dict[str, Any] = {}
    for kind in (job.input, job.output, job.params):
        for name, value in kind.items():
            if name in available:
                raise ValueError(
                    f"rule {job.rule}: {name!r} names more than one input/output/param; "
                    "stage arguments are found by name"
                )
            available[name] = value
    available["threads"] = job.threads
    dataset = getattr(job.wildcards, "dataset", None)
    # By name of the stage, which is the rule's (a workflow used as a module prefixes rules).
    available["execution"] = execution_settings(job.config, stage.__name__, dataset)
    kwargs = {}
    for name, parameter in inspect.signature(stage).parameters.items():
        if name in available:
            kwargs[name] = available[name]
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"rule {job.rule}: stage {stage.__module__}.{stage.__name__} needs {name!r}, "
                "which the rule does not declare"
            )
    return kwargs


def where_it_runs() -> str:
    """The host, and the SLURM job when there is one: the first line of every job's log, so
    that a log says whether its job ran through the cluster."""
    slurm_job = os.environ.get("SLURM_JOB_ID")
    return socket.gethostname() + (f", SLURM job {slurm_job}" if slurm_job else ", no SLURM job")


def run(stage: Callable[..., Any], job: Any) -> None:
    """Run ``stage`` for a Snakemake job, logging to the rule's log file."""
    with log_to_file(job.log[0] if job.log else None):
        logging.getLogger(__name__).info("rule %s on %s", job.rule, where_it_runs())
        stage(**arguments(stage, job))
