"""The workflow through a real SLURM cluster with `--workflow-profile profiles/slurm`.

Needs the test cluster of tests/cluster/start_slurm.sh (`.ci/run` starts it and sets
CELLCONCEPTS_REQUIRE_SLURM=1, so that a missing cluster fails instead of skipping). Checks
that every job but the declared local rules ran as a SLURM job that sacct lists as COMPLETED,
that the results equal a local run's, that the rules that can use a GPU asked for one in the
`gpu` partition while the others did not, that threads, memory and time arrived as set, and
that a job SLURM kills for its memory fails the run with its log named and no finished output.

Cluster limits: the test cluster's partitions are those of profiles/slurm/partitions.yaml
(`cpu` 12 h, `long` 3 days, `gpu` 2 days with one `gpu:a100`;
tests/workflow/test_slurm_partitions.py).
A job that asks for more time than `cpu` allows runs in `long`; GPU requests reach sbatch as
`--gpus=1`, `--gpus=a100:1` (`gpu_model`) and `--gres=gpu:a100:1` (`gres`), as the sbatch lines
of the run's log show; a job no partition admits stops the run before anything is submitted.
"""

from __future__ import annotations

import copy
import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO, TINY, run_snakemake

from cellconcepts.stages.execution import GPU_RULES

pytestmark = pytest.mark.slow

# The synthetic dataset alone: every stage of the dictionary branch, two of the GPU rules.
CONFIG = copy.deepcopy(TINY)
del CONFIG["datasets"]["pbmc"]
CONFIG["dictionary"]["train"]["steps"] = 200
CONFIG["dictionary"]["train"]["checkpoint_every"] = 100

THREADS = 2  # the test node has 2 CPUs at least; profiles/slurm asks for 8 where it can
MEM_MB = 1500
RUNTIME = 20
# What the test sets per rule on top of the profile, to fit the test node; sacct must show it.
SET_RESOURCES = {
    "train_dictionary": (1800, 25),
    "encode_tokens": (1700, 15),
    "probe_model": (1600, 15),
    "probe_raw": (1600, 15),
}
# More time than the `cpu` partition's MaxTime (12 h) and less than `long`'s (3 days): the
# executor sends the job to `long` (its Timelimit in sacct: 16:40:00).
LONG_RULE, LONG_RUNTIME = "simulate_superposition", 1000
# encode_tokens asks for its GPU as a typed generic resource instead of the profile's `gpu=1`
# (docs/cluster.md): sbatch gets `--gres=gpu:a100:1`; train_dictionary keeps `--gpus=1`.
GRES_RULE = "encode_tokens"
MAIN_RUN = (
    f"{LONG_RULE}:runtime={LONG_RUNTIME}",
    f"{GRES_RULE}:gpu=0",
    f"{GRES_RULE}:gres=gpu:a100:1",
)


def _slurm_account() -> str:
    account = os.environ.get("CELLCONCEPTS_SLURM_ACCOUNT")
    reachable = (
        account is not None
        and shutil.which("sinfo") is not None
        and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    )
    if reachable:
        return account
    message = 'no SLURM test cluster (start it with: eval "$(bash tests/cluster/start_slurm.sh)")'
    if os.environ.get("CELLCONCEPTS_REQUIRE_SLURM"):
        pytest.fail(message)
    pytest.skip(message)


def _slurm_args(account: str, *overrides: str) -> list[str]:
    """The SLURM profile, with what must change for the test node; `overrides` are further
    `--set-resources` items (the last value of a rule's key wins)."""
    set_resources = [
        f"{rule}:{key}={value}"
        for rule, (mem, runtime) in SET_RESOURCES.items()
        for key, value in (("mem_mb", mem), ("runtime", runtime))
    ] + list(overrides)
    return [
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
        "--default-resources",
        f"slurm_account={account}",
        f"mem_mb={MEM_MB}",
        f"runtime={RUNTIME}",
        "--set-resources",
        *set_resources,
        "--set-threads",
        *(f"{rule}={THREADS}" for rule in SET_RESOURCES),
        # Two small jobs to a group job (the profile's 10 would need 10 CPUs): grouping is
        # exercised on a node this size.
        "--group-components",
        "tables=2",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--jobs",
        "4",
        # The executor logs each sbatch line at debug level.
        "--verbose",
    ]


def _sacct(workdir: Path) -> list[dict[str, str]]:
    """The SLURM jobs (allocations, not steps) that ran in `workdir`."""
    fields = "JobID,Comment,Partition,State,ReqCPUS,ReqMem,Timelimit,AllocTRES,WorkDir"
    result = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-S", "now-1days", f"--format={fields}"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = fields.split(",")
    rows = [dict(zip(names, line.split("|"), strict=True)) for line in result.stdout.splitlines()]
    return [row for row in rows if Path(row["WorkDir"]).resolve() == workdir.resolve()]


def _rule(comment: str) -> str:
    match = re.match(r"rule_(\w+?)(?:_wildcards_|$)", comment)
    assert match, f"SLURM job comment {comment!r} does not name a rule"
    return match.group(1)


def _sbatch_lines(output: str) -> dict[str, list[str]]:
    """rule -> the sbatch lines the executor ran for its jobs (up to --wrap)."""
    lines: dict[str, list[str]] = {}
    for line in re.findall(r"sbatch call: (sbatch .*?) --wrap=", output):
        comment = re.search(r"--comment (\S+)", line).group(1)
        lines.setdefault(_rule(comment), []).append(line)
    return lines


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, str]:
    account = _slurm_account()
    local = tmp_path_factory.mktemp("local")
    # The same threads per job as the SLURM run: torch's sums depend on the thread count, so
    # tables are identical only for equal threads (the rules take one thread by default).
    threads = [f"{rule}={THREADS}" for rule in SET_RESOURCES]
    result = run_snakemake(local, CONFIG, "--cores", str(THREADS), "--set-threads", *threads)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    cluster = tmp_path_factory.mktemp("slurm")
    result = run_snakemake(cluster, CONFIG, *_slurm_args(account, *MAIN_RUN), timeout=2400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return local, cluster, output


def test_every_job_but_the_local_rules_is_a_completed_slurm_job(runs):
    _, cluster, output = runs
    local_rules = set(re.findall(r"^\s*localrule (\w+):", output, flags=re.MULTILINE))
    cluster_rules = set(re.findall(r"^\s*rule (\w+):", output, flags=re.MULTILINE))
    assert cluster_rules >= {"simulate_superposition", "train_dictionary", "selectivity"}
    jobs = {row["JobID"]: row for row in _sacct(cluster)}
    assert jobs, "sacct lists no job from the SLURM run"
    assert {row["State"] for row in jobs.values()} == {"COMPLETED"}, jobs
    # The small table jobs went to the queue in groups (profiles/slurm: group `tables`).
    assert any(row["Comment"].startswith("rule_tables") for row in jobs.values()), jobs
    logs = sorted((cluster / "results" / "toy" / "logs").glob("*.log"))
    assert len(logs) > 20
    for log in logs:
        first = log.read_text().splitlines()[0]
        rule = re.search(r"rule (\w+) on ", first).group(1)
        slurm_job = re.search(r"SLURM job (\d+)", first)
        if rule in local_rules:
            assert slurm_job is None, f"{log.name}: local rule {rule} ran in a SLURM job"
            continue
        assert rule in cluster_rules, first
        assert slurm_job, f"{log.name}: rule {rule} did not run in a SLURM job: {first}"
        assert jobs[slurm_job.group(1)]["State"] == "COMPLETED"


def test_results_equal_a_local_run(runs):
    local, cluster, _ = runs
    tables = ["headline.csv", "headline.md", "headline.tex"]
    tables += [
        str(p.relative_to(local / "results" / "toy"))
        for p in (local / "results" / "toy" / "tables").glob("*")
    ]
    assert len(tables) > 5
    for table in tables:
        a, b = local / "results" / "toy" / table, cluster / "results" / "toy" / table
        assert filecmp.cmp(a, b, shallow=False), f"{table} differs between local and SLURM runs"
    compare = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "compare_results.py"),
            str(local / "results"),
            str(cluster / "results"),
        ],
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def test_gpu_rules_ask_for_a_gpu_in_the_gpu_partition(runs):
    _, cluster, _ = runs
    seen = set()
    for row in _sacct(cluster):
        rule = _rule(row["Comment"])
        seen.add(rule)
        gpus = re.search(r"gres/gpu=(\d+)", row["AllocTRES"])
        if rule in GPU_RULES:
            assert row["Partition"] == "gpu", row
            assert gpus and gpus.group(1) == "1", row
            assert "gres/gpu:a100=1" in row["AllocTRES"], row
        else:
            assert row["Partition"] == ("long" if rule == LONG_RULE else "cpu"), row
            assert gpus is None, row
    assert {"train_dictionary", "encode_tokens"} <= seen


def test_gpu_requests_reach_sbatch_as_the_profile_and_the_resources_say(runs):
    _, _, output = runs
    sbatch = _sbatch_lines(output)
    assert {"train_dictionary", GRES_RULE, "probe_raw"} <= set(sbatch), sbatch.keys()
    # Group jobs: the comment names the group and its rules (rule_tables_selectivity, ...).
    assert any(rule.startswith("tables") for rule in sbatch), sbatch.keys()
    for rule, lines in sbatch.items():
        for line in lines:
            if rule == GRES_RULE:
                assert " -p gpu " in line and line.endswith(" --gres=gpu:a100:1"), line
                assert "--gpus" not in line, line
            elif rule in GPU_RULES:
                assert " -p gpu " in line and line.endswith(" --gpus=1"), line
                assert "--gres" not in line, line
            else:
                assert "--gpus" not in line and "--gres" not in line, line
    print(f"sbatch lines seen: {sbatch['train_dictionary'][0]}\n{sbatch[GRES_RULE][0]}")


def test_a_job_longer_than_the_cpu_partition_allows_runs_in_long(runs):
    _, cluster, output = runs
    assert f"Auto-selected partition 'long' for job {LONG_RULE}" in output, output[-4000:]
    (line,) = _sbatch_lines(output)[LONG_RULE]
    assert f" -p long -t {LONG_RUNTIME} " in line, line
    (row,) = [row for row in _sacct(cluster) if _rule(row["Comment"]) == LONG_RULE]
    assert row["Partition"] == "long" and row["State"] == "COMPLETED", row
    assert row["Timelimit"] == "16:40:00", row
    # What sbatch would have said had it gone to `cpu` (EnforcePartLimits=ALL).
    direct = subprocess.run(
        ["sbatch", "-A", _slurm_account(), "-p", "cpu", "-t", str(LONG_RUNTIME), "--wrap", "true"],
        capture_output=True,
        text=True,
    )
    assert direct.returncode != 0
    assert "Requested time limit is invalid" in direct.stderr, direct.stderr


def test_a_job_no_partition_admits_stops_the_run_before_submission(tmp_path):
    account = _slurm_account()
    # The `gpu` partition allows 2 days; no other partition has a GPU.
    result = run_snakemake(
        tmp_path, CONFIG, *_slurm_args(account, "train_dictionary:runtime=5000"), timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    partitions = REPO / "profiles" / "slurm" / "partitions.yaml"
    assert (
        f"No SLURM partition of {partitions} admits the jobs below; nothing was submitted."
    ) in output, output[-4000:]
    assert re.search(
        r"rule train_dictionary \(4 jobs; e\.g\. dataset=toy, method=\w+, whitening=\w+, "
        r"sparsity=\d+, seed=\d+\) asks for runtime=5000 min, mem_mb=1800 MB, threads=2, gpu=1:",
        output,
    ), output[-4000:]
    assert (
        "  gpu (max_runtime 2880 min, max_mem_mb 256000 MB, max_threads 32, max_gpu 4, "
        "available_gpu_models ['a100']): runtime 5000 min > max_runtime 2880 min"
    ) in output
    assert "runtime 5000 min > max_runtime 720 min; 1 GPU > max_gpu 0" in output
    # Nothing reached SLURM, and no job ran.
    assert "sbatch call" not in output and "has been submitted" not in output
    assert _sacct(tmp_path) == []
    assert not (tmp_path / ".snakemake" / "slurm_logs").exists()
    assert not list(tmp_path.glob("results/toy/tokens/*"))


def test_threads_memory_and_time_arrive_as_set(runs):
    _, cluster, _ = runs
    seen = set()
    for row in _sacct(cluster):
        rule = _rule(row["Comment"])
        if rule not in SET_RESOURCES:
            continue
        seen.add(rule)
        mem, runtime = SET_RESOURCES[rule]
        assert row["ReqCPUS"] == str(THREADS), row
        assert row["ReqMem"] in (f"{mem}M", f"{mem}Mn"), row
        assert row["Timelimit"] == f"00:{runtime:02d}:00", row
    assert seen == set(SET_RESOURCES)


def test_a_job_killed_by_slurm_fails_the_run_and_leaves_no_finished_output(tmp_path):
    account = _slurm_account()
    # 50 MB is less than a Python interpreter needs: SLURM kills the training job at once.
    # It asks for a GPU by type (`gpu_model`): sbatch gets `--gpus=a100:1`.
    result = run_snakemake(
        tmp_path,
        CONFIG,
        *_slurm_args(account, "train_dictionary:mem_mb=50", "train_dictionary:gpu_model=a100"),
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    for line in _sbatch_lines(output)["train_dictionary"]:
        assert " -p gpu " in line and line.endswith(" --gpus=a100:1"), line
    assert "Error in rule train_dictionary" in output, output[-4000:]
    assert re.search(r"SLURM status is: '(OUT_OF_MEMORY|FAILED|CANCELLED)", output), output[-4000:]
    # SLURM says why in the job's own log, which Snakemake names.
    slurm_logs = re.findall(r"(/\S+/slurm_logs/rule_train_dictionary/\S+/\d+\.log)", output)
    assert slurm_logs, output[-4000:]
    assert any("exceeded memory limit" in Path(log).read_text() for log in set(slurm_logs))
    assert re.search(r"results/toy/logs/train_\w+\.log", output), output[-4000:]
    toy = tmp_path / "results" / "toy"
    assert not list(toy.glob("models/*/model.pt"))
    assert not (toy / "headline.csv").exists()
    assert not (toy / "tables").exists()
