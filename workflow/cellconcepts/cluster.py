"""SLURM partitions: refuse, before anything is submitted, the jobs that no partition admits.

The SLURM executor plugin picks each job's partition from the partitions file
(`slurm-partition-config` in profiles/slurm/config.yaml, or the environment variable
SNAKEMAKE_SLURM_PARTITIONS): of the partitions whose limits (`max_runtime`, `max_mem_mb`,
`max_threads`, `max_gpu`, `available_gpu_models`, ...) admit the job, the one it fills best.
Where none admits a job, the plugin only warns and submits it to the cluster's default
partition, where SLURM refuses it at `sbatch` (EnforcePartLimits) or leaves it pending for
ever (`Reason=PartitionTimeLimit`), hours into a run.

`refuse_unadmitted_jobs` runs when the workflow starts (the Snakefile's `onstart`, after the
DAG is built and before the first submission): it asks the plugin's own test
(`Partition.score_job_fit`) about every job and group job the run will submit, and stops the
run with one message that names, per rule, the request and each partition's limits and why
it refuses. The routing itself stays the plugin's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from math import isinf
from pathlib import Path
from typing import Any

# Numeric requests and the limits they are held against (the plugin's own pairs).
NUMERIC_LIMITS = {
    "runtime": "max_runtime",
    "mem_mb": "max_mem_mb",
    "mem_mb_per_cpu": "max_mem_mb_per_cpu",
    "nodes": "max_nodes",
    "tasks": "max_tasks",
    "tasks_per_node": "max_tasks_per_node",
    "mpi_tasks": "max_mpi_tasks",
}
UNITS = {"runtime": " min", "mem_mb": " MB", "mem_mb_per_cpu": " MB"}
# The requests a message shows, in this order, where the job has them.
SHOWN = ["runtime", "mem_mb", "mem_mb_per_cpu", "threads", "gpu", "gpu_model", "gres"]
SHOWN += ["nodes", "tasks", "constraint", "slurm_cluster", "slurm_partition"]


def partition_file(workflow: Any) -> Path | None:
    """The partitions file the SLURM executor of this run reads, or None (another executor,
    or no file)."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "name", None) != "slurm":
        return None
    path = getattr(workflow.executor_settings, "partition_config", None) or os.environ.get(
        "SNAKEMAKE_SLURM_PARTITIONS"
    )
    if not path:
        return None
    # The executor read it before Snakemake moved to --directory: relative to where it started.
    return Path(getattr(workflow, "workdir_init", None) or ".", path)


def read_partitions(path: Path) -> list[Any]:
    """The partitions of `path`, read as the plugin reads them."""
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    return read_partition_file(path)


def _number(value: Any) -> float:
    """A resource value as the plugin compares it (0 where it is not a number, e.g. TBD)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def request(job: Any) -> str:
    """What `job` asks for, e.g. "runtime=2880 min, mem_mb=16000 MB, threads=8, gpu=1"."""
    from snakemake_executor_plugin_slurm.partitions import get_effective_threads

    items = []
    for key in SHOWN:
        if key == "threads":
            value: Any = get_effective_threads(job)
        else:
            value = job.resources.get(key)
        if value is None or value == "" or (key == "gpu" and not _number(value)):
            continue
        unit = UNITS.get(key, "")
        items.append(f"{key}={_fmt(value) if isinstance(value, (int, float)) else value}{unit}")
    return ", ".join(items)


def limits(partition: Any) -> str:
    """A partition's finite limits, e.g. "max_runtime 720 min, max_mem_mb 128000 MB, max_gpu 0"."""
    lim = partition.limits
    items = []
    for name in ("max_runtime", "max_mem_mb", "max_mem_mb_per_cpu", "max_threads"):
        value = getattr(lim, name)
        if not isinf(value):
            unit = UNITS.get(name.removeprefix("max_"), "")
            items.append(f"{name} {_fmt(value)}{unit}")
    for name in ("max_cpus_per_task", "max_cpus_per_gpu", "max_nodes", "max_tasks"):
        value = getattr(lim, name)
        if not isinf(value):
            items.append(f"{name} {_fmt(value)}")
    items.append(f"max_gpu {lim.max_gpu}")
    if lim.available_gpu_models:
        items.append(f"available_gpu_models {list(lim.available_gpu_models)}")
    if lim.available_constraints:
        items.append(f"available_constraints {list(lim.available_constraints)}")
    if partition.partition_cluster:
        items.append(f"cluster {partition.partition_cluster}")
    return ", ".join(items)


def refusals(partition: Any, job: Any) -> list[str]:
    """Why `partition` does not admit `job` (empty when it does), test by test as the plugin's
    `Partition.score_job_fit` makes them."""
    from snakemake_executor_plugin_slurm.partitions import (
        get_effective_threads,
        get_job_cpu_requirement,
        parse_gpu_requirements,
    )

    lim = partition.limits
    res = job.resources
    reasons = []
    cluster = res.get("slurm_cluster") or res.get("cluster") or res.get("clusters")
    if cluster != partition.partition_cluster:
        reasons.append(f"cluster {cluster!r}, the partition's is {partition.partition_cluster!r}")
    for key, limit_name in NUMERIC_LIMITS.items():
        value, limit = _number(res.get(key, 0)), getattr(lim, limit_name)
        if value > 0 and not isinf(limit) and value > limit:
            unit = UNITS.get(key, "")
            reasons.append(f"{key} {_fmt(value)}{unit} > {limit_name} {_fmt(limit)}{unit}")
    threads = get_effective_threads(job)
    cpus, kind = get_job_cpu_requirement(job)
    wanted = max(threads, cpus if kind == "task" else 0)
    if not isinf(lim.max_threads) and wanted > lim.max_threads:
        reasons.append(f"threads {wanted} > max_threads {_fmt(lim.max_threads)}")
    if kind == "task" and not isinf(lim.max_cpus_per_task) and cpus > lim.max_cpus_per_task:
        reasons.append(f"cpus_per_task {cpus} > max_cpus_per_task {_fmt(lim.max_cpus_per_task)}")
    if kind == "gpu" and not isinf(lim.max_cpus_per_gpu) and cpus > lim.max_cpus_per_gpu:
        reasons.append(f"cpus_per_gpu {cpus} > max_cpus_per_gpu {_fmt(lim.max_cpus_per_gpu)}")
    gpus, model = parse_gpu_requirements(job)
    if gpus > 0 and gpus > lim.max_gpu:
        reasons.append(f"{gpus} GPU > max_gpu {lim.max_gpu}")
    if gpus > 0 and model and lim.available_gpu_models and model not in lim.available_gpu_models:
        reasons.append(f"GPU model {model!r} not in {list(lim.available_gpu_models)}")
    if res.get("mpi") and not lim.supports_mpi:
        reasons.append("mpi, and the partition has supports_mpi false")
    constraint = res.get("constraint")
    if constraint and lim.available_constraints:
        missing = [
            c.strip()
            for c in str(constraint).split(",")
            if c.strip() and c.strip() not in lim.available_constraints
        ]
        if missing:
            reasons.append(f"constraint {missing} not in {list(lim.available_constraints)}")
    return reasons


def _admits(partition: Any, job: Any) -> bool:
    return partition.score_job_fit(job) is not None


def _describe(job: Any) -> tuple[str, str]:
    """(what the job is: its rule or group and rules, one job's wildcards)."""
    members = list(getattr(job, "jobs", None) or [job])
    rules = sorted({member.rule.name for member in members})
    if len(members) > 1 or getattr(job, "is_group", lambda: False)():
        what = f"group {job.name} (rules {', '.join(rules)})"
    else:
        what = f"rule {rules[0]}"
    wildcards = getattr(members[0], "wildcards_dict", None) or {}
    return what, ", ".join(f"{k}={v}" for k, v in wildcards.items())


def unadmitted(jobs: Iterable[Any], partitions: list[Any]) -> list[str]:
    """One paragraph per rule (or group) and request that no partition admits, naming the
    request and every partition's limits and refusals; empty when every job is admitted.

    A job that names its partition (`slurm_partition`) is held against that partition only,
    where the file lists it (the plugin submits it there without a test)."""
    failing: dict[tuple[str, str], list[Any]] = {}
    for job in jobs:
        named = job.resources.get("slurm_partition")
        candidates = [p for p in partitions if not named or p.name == named]
        if named and not candidates:
            continue
        if not any(_admits(p, job) for p in candidates):
            what, _ = _describe(job)
            failing.setdefault((what, request(job)), []).append((job, candidates))
    paragraphs = []
    for (what, asked), entries in failing.items():
        job, candidates = entries[0]
        _, wildcards = _describe(job)
        count = f"{len(entries)} job{'s' if len(entries) > 1 else ''}"
        example = f"; e.g. {wildcards}" if wildcards else ""
        lines = [f"{what} ({count}{example}) asks for {asked}:"]
        for partition in candidates:
            why = "; ".join(refusals(partition, job)) or "refused by the executor's partition test"
            lines.append(f"  {partition.name} ({limits(partition)}): {why}")
        paragraphs.append("\n".join(lines))
    return paragraphs


def submitted_units(dag: Any) -> list[Any]:
    """The jobs and group jobs of `dag` that the executor will submit (local rules run in the
    Snakemake process and are left out)."""
    units, seen = [], set()
    for job in dag.needrun_jobs():
        if job.is_local:
            continue
        unit = dag.get_job_group(job) or job
        if id(unit) not in seen:
            seen.add(id(unit))
            units.append(unit)
    return units


def refuse_unadmitted_jobs(workflow: Any) -> None:
    """Stop the run, before the first submission, if the SLURM executor would send a job to a
    partition that cannot run it; do nothing under another executor or without a partitions
    file."""
    path = partition_file(workflow)
    if path is None:
        return
    partitions = read_partitions(path)
    paragraphs = unadmitted(submitted_units(workflow.dag), partitions)
    if not paragraphs:
        return
    from snakemake.exceptions import WorkflowError

    raise WorkflowError(
        f"No SLURM partition of {path} admits the jobs below; nothing was submitted.\n"
        + "\n".join(paragraphs)
        + "\nLower the request (e.g. `--set-resources <rule>:runtime=<minutes>`; a "
        "command-line list replaces the profile's whole list) or add a partition that admits "
        f"it to {path} (docs/cluster.md)."
    )
