"""Fixtures shared by every test; shared constants and helpers are in support/testkit.py."""

from __future__ import annotations

import pytest
import yaml
from testkit import REPO


@pytest.fixture
def demo_config() -> dict:
    """The shipped demo config (config/config.yaml) as a dict."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())
