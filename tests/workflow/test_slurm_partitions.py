"""Cluster limits without a cluster: the example partitions of profiles/slurm/partitions.yaml
admit every job of the demo and of the paper-scale config with the profile's resources (the
2,880-minute `train_dictionary`, the 1,440-minute `train_mae`, the GPU rules); a job that no
partition admits is refused with its rule, request and every partition's limits
(cellconcepts.cluster); the test cluster of tests/cluster/start_slurm.sh has exactly these
partitions; GPU types reach sbatch as the plugin writes them (docs/cluster.md).

tests/workflow/test_slurm.py shows the same on the real test cluster.
"""

from __future__ import annotations

import logging
import re
from math import isinf
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
from snakemake_executor_plugin_slurm.utils import parse_time_to_minutes, set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
from snakemake_interface_common.exceptions import WorkflowError
from testkit import REPO, run_snakemake

from cellconcepts.cluster import refuse_unadmitted_jobs, unadmitted
from cellconcepts.stages.execution import GPU_RULES

PROFILE = REPO / "profiles" / "slurm"
PARTITIONS = PROFILE / "partitions.yaml"
START_SLURM = REPO / "tests" / "cluster" / "start_slurm.sh"
LOGGER = logging.getLogger(__name__)


class Resources(dict):
    __getattr__ = dict.get


class Job:
    """What the executor and cellconcepts.cluster read of a Snakemake job."""

    is_local = False

    def __init__(self, rule: str, threads: int = 1, wildcards: dict | None = None, **resources):
        self.name, self.threads, self.resources = rule, threads, Resources(resources)
        self.rule = SimpleNamespace(name=rule)
        self.wildcards_dict = wildcards or {}

    def is_group(self) -> bool:
        return False


class GroupJob(Job):
    def __init__(self, group: str, jobs: list[Job], threads: int, **resources):
        super().__init__(group, threads, **resources)
        self.jobs = jobs

    def is_group(self) -> bool:
        return True


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _partitions() -> list:
    return read_partition_file(PROFILE / _profile()["slurm-partition-config"])


def test_the_profiles_paper_scale_resources_are_admitted_and_routed():
    profile = _profile()
    resources, threads = profile["set-resources"], profile["set-threads"]
    # The numbers the issue names: if they change, this test must see the new ones.
    assert resources["train_dictionary"]["runtime"] == 2880
    assert resources["train_mae"]["runtime"] == 1440
    partitions = _partitions()
    jobs = {
        rule: Job(rule, threads.get(rule, 1), gpu=int(rule in GPU_RULES), **values)
        for rule, values in resources.items()
    }
    assert unadmitted(jobs.values(), partitions) == []
    for rule, job in jobs.items():
        chosen = get_best_partition(partitions, job, LOGGER)
        assert chosen == ("gpu" if rule in GPU_RULES else "cpu"), (rule, chosen)


def _dry_run_jobs(tmp_path: Path, config: dict) -> list[Job]:
    """The jobs the executor would submit in a dry run of `config` under the SLURM profile:
    each non-local job with its resources as Snakemake prints them, threads from the profile,
    plus each group of `groups` at its full size (`group-components` of its largest job, run
    side by side: the executor asks for the sum of their memory and threads)."""
    result = run_snakemake(tmp_path, config, "-n", "--workflow-profile", str(PROFILE))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    profile = _profile()
    jobs = []
    for block in re.split(r"^\s*(?=(?:local)?rule \w+:)", result.stdout, flags=re.MULTILINE):
        head = re.match(r"(local)?rule (\w+):", block)
        if not head or head.group(1):
            continue
        line = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        values = dict(re.findall(r"(\w+)=([^,]+)", line.group(1))) if line else {}
        kept = {k: int(v) for k, v in values.items() if k in ("mem_mb", "runtime", "gpu")}
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, flags=re.MULTILINE)
        wildcards = dict(re.findall(r"(\w+)=([^,]+)", wildcards.group(1))) if wildcards else {}
        rule = head.group(2)
        jobs.append(Job(rule, profile["set-threads"].get(rule, 1), wildcards, **kept))
    for rule, group in profile["groups"].items():
        members = [job for job in jobs if job.name == rule]
        if not members:
            continue
        size = profile["group-components"][group]
        largest = max(members, key=lambda job: (job.resources["mem_mb"], job.threads))
        jobs.append(
            GroupJob(
                group,
                [largest] * size,
                threads=largest.threads * size,
                mem_mb=largest.resources["mem_mb"] * size,
                runtime=max(job.resources["runtime"] for job in members),
            )
        )
    return jobs


@pytest.mark.parametrize("name", ["config.yaml", "paper_scale.yaml"])
def test_every_job_of_the_demo_and_the_paper_scale_config_is_admitted(tmp_path, name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    config["results"] = str(tmp_path / "results")
    jobs = _dry_run_jobs(tmp_path, config)
    runtimes = {job.name: job.resources["runtime"] for job in jobs}
    if name == "config.yaml":
        # The demo has every GPU rule, with the profile's paper-scale time.
        assert GPU_RULES <= set(runtimes), GPU_RULES - set(runtimes)
        assert runtimes["train_mae"] == 1440
    assert runtimes["train_dictionary"] == 2880
    assert any(job.is_group() for job in jobs)
    assert unadmitted(jobs, _partitions()) == []


def test_a_job_no_partition_admits_is_named_with_its_request_and_every_limit():
    partitions = _partitions()
    wildcards = {"dataset": "screen"}
    jobs = [
        Job("train_mae", 8, wildcards, runtime=3000, mem_mb=32000, gpu=1),
        Job("train_mae", 8, {"dataset": "other"}, runtime=3000, mem_mb=32000, gpu=1),
        Job("embed_images", 8, wildcards, runtime=60, mem_mb=8000, gpu=1, gpu_model="v100"),
        Job("probe_model", 64, wildcards, runtime=60, mem_mb=8000),
        Job("probe_raw", 1, wildcards, runtime=60, mem_mb=300000),
        Job("selectivity", 1, wildcards, runtime=5000, mem_mb=2000),
        # Admitted: by `long` (time) and by `gpu` (memory, above every CPU partition's).
        Job("cellprofiler_features", 1, wildcards, runtime=1000, mem_mb=4000),
        Job("encode_tokens", 8, wildcards, runtime=60, mem_mb=200000),
    ]
    paragraphs = unadmitted(jobs, partitions)
    assert len(paragraphs) == 5, "\n".join(paragraphs)
    mae, embed, probe, raw, selectivity = paragraphs
    # One paragraph for the two train_mae jobs of the same request.
    assert mae.splitlines()[0] == (
        "rule train_mae (2 jobs; e.g. dataset=screen) asks for runtime=3000 min, "
        "mem_mb=32000 MB, threads=8, gpu=1:"
    )
    assert mae.splitlines()[1] == (
        "  cpu (max_runtime 720 min, max_mem_mb 128000 MB, max_threads 32, max_gpu 0): "
        "runtime 3000 min > max_runtime 720 min; 1 GPU > max_gpu 0"
    )
    assert mae.splitlines()[3] == (
        "  gpu (max_runtime 2880 min, max_mem_mb 256000 MB, max_threads 32, max_gpu 4, "
        "available_gpu_models ['a100']): runtime 3000 min > max_runtime 2880 min"
    )
    assert "gpu_model=v100" in embed and "GPU model 'v100' not in ['a100']" in embed
    assert "threads 64 > max_threads 32" in probe
    assert "mem_mb 300000 MB > max_mem_mb 256000 MB" in raw
    assert "runtime 5000 min > max_runtime 4320 min" in selectivity
    assert get_best_partition(partitions, jobs[6], LOGGER) == "long"
    assert get_best_partition(partitions, jobs[7], LOGGER) == "gpu"
    # A job that names its partition is held against that one only.
    named = Job("probe_raw", 1, runtime=1000, mem_mb=2000, slurm_partition="cpu")
    assert "runtime 1000 min > max_runtime 720 min" in unadmitted([named], partitions)[0]
    unlisted = Job("probe_raw", 1, runtime=1000, slurm_partition="other")
    assert unadmitted([unlisted], partitions) == []


def test_the_run_stops_before_submission_where_a_job_is_not_admitted(tmp_path, monkeypatch):
    """refuse_unadmitted_jobs as the Snakefile's onstart calls it, on a stand-in workflow."""
    too_long = Job("train_dictionary", 8, {"dataset": "toy"}, runtime=5000, mem_mb=16000, gpu=1)
    local = Job("report_dataset", 1, runtime=10_000)
    local.is_local = True
    group = GroupJob("tables", [Job("selectivity")], threads=10, mem_mb=40000, runtime=10)
    dag = SimpleNamespace(
        needrun_jobs=lambda: [too_long, local, group.jobs[0]],
        get_job_group=lambda job: group if job in group.jobs else None,
    )
    # The profile names partitions.yaml relative to where Snakemake started (workdir_init).
    workflow = SimpleNamespace(
        executor_plugin=SimpleNamespace(name="slurm"),
        executor_settings=SimpleNamespace(partition_config="profiles/slurm/partitions.yaml"),
        workdir_init=str(REPO),
        dag=dag,
    )
    with pytest.raises(WorkflowError) as refused:
        refuse_unadmitted_jobs(workflow)
    message = str(refused.value)
    assert message.startswith(f"No SLURM partition of {PARTITIONS} admits the jobs below; ")
    assert "nothing was submitted" in message
    assert "rule train_dictionary (1 job; e.g. dataset=toy) asks for runtime=5000 min" in message
    assert "report_dataset" not in message and "tables" not in message
    # Admitted, another executor, or no partitions file: nothing to say.
    too_long.resources["runtime"] = 2880
    refuse_unadmitted_jobs(workflow)
    workflow.executor_plugin.name = "local"
    refuse_unadmitted_jobs(workflow)
    workflow.executor_plugin.name = "slurm"
    workflow.executor_settings.partition_config = None
    monkeypatch.delenv("SNAKEMAKE_SLURM_PARTITIONS", raising=False)
    refuse_unadmitted_jobs(workflow)
    # The plugin's environment variable names the file too.
    too_long.resources["runtime"] = 5000
    monkeypatch.setenv("SNAKEMAKE_SLURM_PARTITIONS", str(PARTITIONS))
    with pytest.raises(WorkflowError, match="runtime 5000 min > max_runtime 2880 min"):
        refuse_unadmitted_jobs(workflow)


def _slurm_conf_partitions() -> dict[str, dict[str, str]]:
    lines = re.findall(r"^PartitionName=(\S+) (.*)$", START_SLURM.read_text(), flags=re.MULTILINE)
    return {name: dict(re.findall(r"(\w+)=(\S+)", rest)) for name, rest in lines}


def test_the_test_cluster_has_the_example_partitions():
    conf = _slurm_conf_partitions()
    example = {p.name: p.limits for p in _partitions()}
    assert set(conf) == set(example) == {"cpu", "long", "gpu"}
    for name, limits in example.items():
        assert conf[name]["MaxTime"] != "INFINITE"
        assert parse_time_to_minutes(conf[name]["MaxTime"]) == limits.max_runtime, name
        assert int(conf[name]["MaxMemPerNode"]) == limits.max_mem_mb, name
        assert int(conf[name]["MaxCPUsPerNode"]) == limits.max_threads, name
        assert not isinf(limits.max_runtime) and not isinf(limits.max_mem_mb)
    assert len({limits.max_runtime for limits in example.values()}) == 3
    # The node's GPU type is one the gpu partition lists.
    node_gres = re.search(r"^NodeName=\S+ .*Gres=gpu:(\w+):\d+", START_SLURM.read_text(), re.M)
    assert node_gres and node_gres.group(1) in example["gpu"].available_gpu_models
    assert "EnforcePartLimits=ALL" in START_SLURM.read_text()


def test_gpu_requests_reach_sbatch_as_documented():
    """The GPU part of the sbatch line for each way docs/cluster.md gives (the plugin's own
    function; tests/workflow/test_slurm.py sees the same lines from a real run)."""
    assert set_gres_string(Job("train_dictionary", gpu=1)) == " --gpus=1"
    assert set_gres_string(Job("train_dictionary", gpu=1, gpu_model="a100")) == " --gpus=a100:1"
    assert set_gres_string(Job("train_dictionary", gpu=0, gres="gpu:a100:1")) == (
        " --gres=gpu:a100:1"
    )
    # gpu_model makes any job a GPU job: never put it in default-resources.
    assert set_gres_string(Job("selectivity", gpu_model="a100")) == " --gpus=a100:1"
    # `gres` with a GPU beside the rules' `gpu=1` is refused (by the partition test, before
    # any submission); so is a GPU request in slurm_extra.
    with pytest.raises(WorkflowError, match="mutually exclusive"):
        unadmitted([Job("train_dictionary", gpu=1, gres="gpu:a100:1")], _partitions())
    with pytest.raises(WorkflowError, match="GRES"):
        validate_slurm_extra(Job("train_dictionary", slurm_extra="--gres=gpu:a100:1"))
    # A typed request is routed like an untyped one, and refused where no partition has it.
    typed = Job("train_dictionary", 8, runtime=2880, mem_mb=16000, gpu=0, gres="gpu:a100:1")
    assert get_best_partition(_partitions(), typed, LOGGER) == "gpu"
    typed.resources["gres"] = "gpu:h100:1"
    assert "GPU model 'h100' not in ['a100']" in unadmitted([typed], _partitions())[0]
