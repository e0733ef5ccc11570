"""Fixtures of the fault-injection suite (helpers: tests/helpers/faults.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamflow.seeds.generator import generate_months
from tests.helpers.faults import MONTHS, USERS, FaultHome, make_home


@pytest.fixture(scope="session")
def fault_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    seeds = tmp_path_factory.mktemp("fault_seeds")
    generate_months(seeds, months=MONTHS, users=USERS, seed=11)
    return seeds


@pytest.fixture(scope="module")
def fault_home(tmp_path_factory: pytest.TempPathFactory, fault_seeds: Path) -> Iterator[FaultHome]:
    """Shared by the cases of a module that must leave it unchanged."""
    yield from make_home(tmp_path_factory.mktemp("fault_home"), fault_seeds)


@pytest.fixture
def fresh_home(tmp_path: Path, fault_seeds: Path) -> Iterator[FaultHome]:
    """One per test, for cases that change the database (crashes, concurrency)."""
    yield from make_home(tmp_path, fault_seeds)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fault test needs real services: mark it ``integration`` (a helper module's
    ``pytestmark`` marks nothing, only a test module's does)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)
