"""The conda environments and pip constraints are the environment the tests ran in
(scripts/pin_envs.py writes them; `--check` must find no drift and no import a rule's env lacks)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
from testkit import REPO

SCRIPT = REPO / "scripts" / "pin_envs.py"


@pytest.fixture
def pin_envs(tmp_path, monkeypatch):
    """The script as a module, writing into a copy of envs/."""
    spec = importlib.util.spec_from_file_location("pin_envs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    envs = tmp_path / "envs"
    shutil.copytree(REPO / "envs", envs)
    monkeypatch.setattr(module, "ENVS", envs)
    monkeypatch.setattr(sys, "argv", ["pin_envs.py", "--check"])
    return module


def test_envs_are_the_tested_environment():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if os.environ.get("CELLCONCEPTS_REQUIRE_CELLPROFILER"):
        assert "not checked" not in result.stdout, result.stdout


def test_a_pin_that_drifts_fails_the_check(pin_envs, capsys):
    env = pin_envs.ENVS / "cellconcepts.yaml"
    text = env.read_text()
    assert "  - scipy=" in text
    env.write_text(text.replace("  - scipy=", "  - scipy=0.0.1-"))
    assert pin_envs.main() == 1
    assert "envs/cellconcepts.yaml drifted" in capsys.readouterr().out


def test_an_import_the_env_lacks_fails_the_check(pin_envs):
    env = pin_envs.ENVS / "cellconcepts.yaml"
    lines = env.read_text().splitlines(keepends=True)
    env.write_text("".join(line for line in lines if "scikit-learn=" not in line))
    problems = pin_envs.missing_imports()
    assert any(p.startswith("rule probe_model: imports sklearn (scikit-learn)") for p in problems)
    assert not any("rule simulate_superposition:" in p for p in problems), problems


def test_every_rule_has_an_env_and_a_stage(pin_envs):
    envs = pin_envs.rule_envs()
    rules = {p.stem for p in (REPO / "workflow" / "scripts").glob("*.py")}
    assert set(envs) == rules
    assert set(envs.values()) == {"cellconcepts.yaml"}
    for rule in rules:
        module, function = pin_envs.rule_stage(rule)
        assert function == rule, module
