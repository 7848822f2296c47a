"""Fixtures for the deploy/ tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, or a failure (never a skip): without it the alert rules go unchecked."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's 'prometheus' package "
            "(apt-get install prometheus); ./scripts/test installs it when run as root",
            pytrace=False,
        )
    return path
