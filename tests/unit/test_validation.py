"""Validation rules on small in-memory months (no database)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from streamflow.ingest.loader import parse_as_of
from streamflow.ingest.validation import read_month, validate_month

ROWS = {
    "users": [
        ["A-1", "2022-01-01", "Female", "False", "True", "False"],
        ["B-2", "2022-02-01", "Male", "True", "False", "False"],
    ],
    "subscriptions": [
        ["A-1", "3", "True", "False", "Month-to-month", "True", "29.85", "89.55", "DSL"],
        ["B-2", "10", "", "", "Two year", "False", "19.9", "199.0", "No"],  # null plan flags: valid
    ],
    "usage_agg_30d": [["A-1", "24.5", "29.1", "3", "4", "1"], ["B-2", "3.0", "12.0", "1", "0", "0"]],
    "payments_agg_90d": [["A-1", "1"], ["B-2", "0"]],
    "support_agg_90d": [["A-1", "0", "16.0"], ["B-2", "2", "8.5"]],
    "labels": [["A-1", "False"], ["B-2", "True"]],
}
HEADERS = {
    "users": ["user_id", "signup_date", "user_gender", "user_is_senior", "has_family", "has_dependents"],
    "subscriptions": [
        "user_id",
        "months_active",
        "plan_stream_tv",
        "plan_stream_movies",
        "contract_type",
        "paperless_billing",
        "monthly_fee",
        "total_paid",
        "net_service",
    ],
    "usage_agg_30d": [
        "user_id",
        "watch_hours_30d",
        "avg_session_mins_7d",
        "unique_devices_30d",
        "skips_7d",
        "rebuffer_events_7d",
    ],
    "payments_agg_90d": ["user_id", "failed_payments_90d"],
    "support_agg_90d": ["user_id", "support_tickets_90d", "ticket_avg_resolution_hrs_90d"],
    "labels": ["user_id", "churn_label"],
}


def write_month(tmp_path: Path, edits: dict[str, pd.DataFrame] | None = None) -> Path:
    month = tmp_path / "month"
    month.mkdir()
    for name, rows in ROWS.items():
        df = pd.DataFrame(rows, columns=HEADERS[name])
        if edits and name in edits:
            df = edits[name]
        df.to_csv(month / f"{name}.csv", index=False)
    return month


def frame(name: str) -> pd.DataFrame:
    return pd.DataFrame(ROWS[name], columns=HEADERS[name])


def errors(month: Path, known: set[str] | None = None) -> list[str]:
    frames, report = read_month(month)
    validate_month(frames, report, known or set())
    return [str(v) for v in report.violations]


def test_valid_month_has_no_violations(tmp_path: Path) -> None:
    assert errors(write_month(tmp_path)) == []


@pytest.mark.parametrize(
    ("table", "mutate", "expected"),
    [
        (
            "usage_agg_30d",
            lambda df: df.drop(columns=["skips_7d"]),
            ["usage_agg_30d.csv", "skips_7d", "missing column"],
        ),
        ("payments_agg_90d", lambda df: pd.concat([df, df.head(1)]), ["user_id must be unique", "line 2", "line 4"]),
        ("subscriptions", lambda df: df.assign(monthly_fee=["-1", "19.9"]), ["monthly_fee", "must be >= 0", "'-1'"]),
        ("subscriptions", lambda df: df.assign(months_active=["3.5", "10"]), ["months_active", "must be an integer"]),
        ("subscriptions", lambda df: df.assign(paperless_billing=["maybe", "False"]), ["must be a boolean", "maybe"]),
        ("subscriptions", lambda df: df.assign(net_service=["DSL", ""]), ["net_service", "must not be empty"]),
        (
            "usage_agg_30d",
            lambda df: df.assign(watch_hours_30d=["abc", "inf"]),
            ["must be a finite number", "(2 rows)"],
        ),
        ("users", lambda df: df.assign(signup_date=["2022-13-01", "2022-02-01"]), ["signup_date", "YYYY-MM-DD"]),
        ("labels", lambda df: df.assign(user_id=["A-1", "Z-9"]), ["labels.csv", "not found in users", "Z-9"]),
        ("labels", lambda df: df.assign(extra=["1", "2"]), ["unexpected column", "extra"]),
        ("support_agg_90d", lambda df: df.head(0), ["support_agg_90d.csv", "no rows"]),
    ],
)
def test_each_rule_names_file_column_rule_and_rows(tmp_path: Path, table: str, mutate, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    month = write_month(tmp_path, {table: mutate(frame(table))})
    text = "\n".join(errors(month))
    for needle in expected:
        assert needle in text, text


def test_missing_file_is_reported(tmp_path: Path) -> None:
    month = write_month(tmp_path)
    (month / "labels.csv").unlink()
    assert any("labels.csv" in e and "missing" in e for e in errors(month))


def test_users_known_in_database_are_accepted(tmp_path: Path) -> None:
    users = frame("users").head(1)  # B-2 only known from the database
    month = write_month(tmp_path, {"users": users})
    assert any("B-2" in e for e in errors(month))
    assert errors(month, known={"B-2"}) == []


def test_examples_are_capped(tmp_path: Path) -> None:
    df = pd.concat([frame("payments_agg_90d")] * 20)
    text = "\n".join(errors(write_month(tmp_path, {"payments_agg_90d": df})))
    assert "(40 rows)" in text and text.count("line ") == 5


@pytest.mark.parametrize("bad", ["2024-02-30", "2024/02/29", "", "2024-02-29; DROP TABLE users"])
def test_as_of_must_parse_as_a_date(bad: str) -> None:
    with pytest.raises(ValueError, match="as_of must be a date"):
        parse_as_of(bad)


def test_as_of_parses() -> None:
    assert str(parse_as_of(" 2024-02-29 ")) == "2024-02-29"
