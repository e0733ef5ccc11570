"""The prediction log's table helpers that need no database: partition names and the prune's
input checks (the prune itself runs against a real PostgreSQL in
tests/integration/test_prediction_log.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from streamflow.core.errors import InputError
from streamflow.core.settings import Settings
from streamflow.db.predictions import partition_day, partition_name, prune_predictions


@pytest.mark.parametrize("day", [date(2024, 2, 29), date(1999, 12, 31), date(2026, 1, 1)])
def test_partition_names_round_trip(day: date) -> None:
    assert partition_day(partition_name(day)) == day


@pytest.mark.parametrize(
    "name", ["predictions", "predictions_p2024022", "predictions_p20241301", "predictions_p20240230", "x_p20240101",
             "predictions_p20240101_old"],
)  # fmt: skip
def test_other_tables_are_not_partitions(name: str) -> None:
    assert partition_day(name) is None


def test_prune_refuses_negative_days_before_touching_the_database(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--older-than must be a number of days >= 0"):
        prune_predictions(Settings(home=tmp_path), -1)
    assert not (tmp_path / "pgdata").exists()
