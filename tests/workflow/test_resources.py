"""One source of truth for resources: the rules that can use a GPU (`GPU_RULES`: the rules whose
stage takes a device) ask for one with `gpu=1` under both profiles and no other rule does; the
SLURM profile names no partition, so the executor routes every job by that request alone."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
from testkit import REPO, run_snakemake

from cellconcepts.device import gpu_present
from cellconcepts.stages.execution import GPU_RULES, execution_settings

PROFILES = REPO / "profiles"
RULES = sorted(p.stem for p in (REPO / "workflow" / "scripts").glob("*.py"))


def test_gpu_rules_are_the_rules_whose_stage_takes_a_device(demo_config):
    # With the schema's defaults filled in, as the Snakefile does.
    validate(demo_config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    dataset_of_kind = {}
    for name, section in demo_config["datasets"].items():
        dataset_of_kind.setdefault(section["kind"], name)
    with_device = {
        rule
        for rule in RULES
        for dataset in dataset_of_kind.values()
        if "device" in execution_settings(demo_config, rule, dataset)
    }
    assert with_device == GPU_RULES


def _dry_run(tmp_path: Path, demo_config: dict, profile: str) -> tuple[dict[str, set[int]], str]:
    """(rule -> the `gpu` values its jobs get, the log) in a dry run of the demo with
    `profile`."""
    config = dict(demo_config, results=str(tmp_path / "results"))
    result = run_snakemake(
        tmp_path, config, "-n", "--workflow-profile", str(PROFILES / profile), timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    gpus: dict[str, set[int]] = {}
    for block in re.split(r"^\s*(?:local)?rule ", result.stdout, flags=re.MULTILINE)[1:]:
        rule = block.split(":", 1)[0]
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        gpu = re.search(r"\bgpu=(\d+)", resources.group(1)) if resources else None
        gpus.setdefault(rule, set()).add(int(gpu.group(1)) if gpu else 0)
    return gpus, result.stdout + result.stderr


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_gpu_rules_request_a_gpu_and_no_other_rule_does(tmp_path, demo_config, profile):
    gpus, log = _dry_run(tmp_path, demo_config, profile)
    assert GPU_RULES <= set(gpus), GPU_RULES - set(gpus)
    for rule, values in gpus.items():
        expected = {1} if rule in GPU_RULES else {0}
        assert values == expected, f"profile {profile}: rule {rule} jobs ask for gpu={values}"
    # The local profile's one-GPU-job limit is lifted where there is no GPU (common.smk).
    lifted = "No GPU on this machine" in log
    assert lifted == (profile == "default" and not gpu_present()), log[-2000:]


def test_the_slurm_profile_routes_by_the_gpu_request_alone():
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert "slurm_partition" not in (profile.get("default-resources") or {})
    for rule, resources in (profile.get("set-resources") or {}).items():
        assert "slurm_partition" not in resources, rule
        assert "gpu" not in resources and "gres" not in resources, rule
    assert set(profile.get("groups") or {}).isdisjoint(GPU_RULES)
    partitions = read_partition_file(PROFILES / "slurm" / profile["slurm-partition-config"])
    logger = logging.getLogger(__name__)

    class Resources(dict):
        __getattr__ = dict.get

    class Job:
        def __init__(self, name: str, threads: int, **resources):
            self.name, self.threads, self.resources = name, threads, Resources(resources)

    for rule, resources in (profile.get("set-resources") or {}).items():
        threads = (profile.get("set-threads") or {}).get(rule, 1)
        gpu = 1 if rule in GPU_RULES else 0
        chosen = get_best_partition(partitions, Job(rule, threads, gpu=gpu, **resources), logger)
        assert chosen == ("gpu" if gpu else "cpu"), rule
    assert get_best_partition(partitions, Job("selectivity", 1, mem_mb=2000), logger) == "cpu"


def test_the_local_profile_runs_without_a_gpu():
    profile = yaml.safe_load((PROFILES / "default" / "config.yaml").read_text())
    # A limit, not a requirement: GPU jobs run one at a time on a GPU; without one the
    # Snakefile lifts it (common.smk) and they run on CPU side by side.
    assert profile["resources"]["gpu"] >= 1
    assert "executor" not in profile


def test_gpu_present_reads_the_driver_and_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    driver = tmp_path / "gpus"
    assert not gpu_present({}, driver)  # no driver
    driver.mkdir()
    assert not gpu_present({}, driver)  # the driver lists no GPU
    (driver / "0000:17:00.0").mkdir()
    assert gpu_present({}, driver)
    assert gpu_present({"CUDA_VISIBLE_DEVICES": "0"}, driver)
    assert not gpu_present({"CUDA_VISIBLE_DEVICES": ""}, driver)
    assert not gpu_present({"CUDA_VISIBLE_DEVICES": "-1"}, driver)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/nvidia-smi")
    assert gpu_present({}, tmp_path / "absent")
