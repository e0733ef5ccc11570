"""Synthetic monthly seed data in the course format (six CSVs per month, see ``data_model.py``).

``generate_months`` writes ``out_dir/month_000``, ``month_001``, … for a fixed population
of users: ids, demographics and subscriptions are drawn once; every month
``months_active`` grows by 1, ``total_paid`` by the month's fee, usage / payments /
support columns are re-drawn around per-user values (same marginal every month) and
labels are re-drawn from a logistic churn model on that month's features (intercept solved
so each month churns at 26.5 % in expectation). Marginals are calibrated on the course
data (``calibration.py``). A :class:`DriftSpec` plants shifts in named columns for chosen
months; only those columns move (the churn rate too only if it sets ``churn_rate``);
see ``drift.py`` for the compact CLI syntax.

Every random stream is keyed by (seed, stream name, month), so output is byte-identical
for a seed, month ``k`` does not depend on how many months are generated, and planting
drift leaves every undrifted column byte-identical.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from streamflow.core import data_model
from streamflow.core.dates import COURSE_START_AS_OF, month_as_of, month_dir_name
from streamflow.seeds import calibration as cal
from streamflow.seeds.drift import (
    CATEGORICAL_DRIFT_COLUMNS,
    ConceptDrift,
    DriftSpec,
    DriftSpecError,
    NumericDrift,
    parse_drift_option,
)

__all__ = [
    "DriftSpec",
    "MonthData",
    "NumericDrift",
    "generate_months",
    "iter_months",
    "parse_drift_option",
    "write_csv",
]

Progress = Callable[[str], None]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
AnyArray = npt.NDArray[Any]

_NO_NET = cal.NET_SERVICES.index("No")
_LETTERS = 26**5
_ID_SPACE = 10_000 * _LETTERS
_FEE_CENTER = 65.0


@dataclass(frozen=True)
class MonthData:
    """One generated month: its index, as-of date and the six Arrow tables (schema column order)."""

    index: int
    as_of: date
    tables: dict[str, pa.Table]

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables as pandas frames (text columns as str, nullable flags as object True/False/None)."""
        out = {}
        for name, table in self.tables.items():
            cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
            out[name] = pa.table(cols, names=table.column_names).to_pandas()
        return out


def _rng(seed: int, stream: str, month: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode()), month]))


def _inverse_cdf(u: FloatArray, quantiles: tuple[float, ...]) -> FloatArray:
    """Piecewise-linear inverse CDF through the quantile knots, at uniforms ``u``."""
    knots = np.asarray(quantiles, dtype=np.float64)
    return np.interp(u, np.linspace(0.0, 1.0, len(knots)), knots)


def _round_to(x: FloatArray, step: float) -> FloatArray:
    return np.round(np.round(x / step) * step, 2)


@dataclass
class _Population:
    """Everything drawn once per (seed, users)."""

    user_id: pa.StringArray
    signup_date: pa.Array  # date32
    male: BoolArray
    senior: BoolArray
    family: BoolArray
    dependents: BoolArray
    contract: npt.NDArray[np.int8]  # index into CONTRACT_TYPES
    net: npt.NDArray[np.int8]  # index into NET_SERVICES
    tv: BoolArray  # meaningless where net == "No"
    movies: BoolArray
    paperless: BoolArray
    fee: FloatArray
    months_active0: IntArray
    total_paid0: FloatArray
    watch_base: FloatArray
    session_base: FloatArray
    resolution_base: FloatArray
    devices0: IntArray
    skips0: IntArray
    rebuffer0: IntArray
    failed0: IntArray
    tickets0: IntArray


def _user_ids(rng: np.random.Generator, n: int) -> pa.StringArray:
    """Unique ids in the course format ``7590-VHVEG``."""
    codes = rng.integers(0, _ID_SPACE, n, dtype=np.int64)
    while True:  # redraw the (rare) duplicates, keeping first occurrences
        _, first = np.unique(codes, return_index=True)
        if len(first) == n:
            break
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        codes[dup] = rng.integers(0, _ID_SPACE, int(dup.sum()), dtype=np.int64)
    buf = np.empty((n, 10), dtype=np.uint8)
    digits, letters = np.divmod(codes, _LETTERS)
    for i in range(4):
        buf[:, 3 - i] = ord("0") + digits % 10
        digits //= 10
    buf[:, 4] = ord("-")
    for i in range(5):
        buf[:, 9 - i] = ord("A") + letters % 26
        letters //= 26
    offsets = np.arange(0, 10 * n + 1, 10, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.tobytes()))


def _p_movies(net: npt.NDArray[np.int8], tv: BoolArray) -> FloatArray:
    p = np.zeros(len(net))
    for (ns, has_tv), value in cal.P_MOVIES_GIVEN_NET_TV.items():
        p[(net == cal.NET_SERVICES.index(ns)) & (tv == has_tv)] = value
    return p


def _draw_population(seed: int, n: int, start_as_of: date) -> _Population:
    rng = _rng(seed, "users")
    user_id = _user_ids(_rng(seed, "user_id"), n)
    contract = rng.choice(len(cal.CONTRACT_TYPES), size=n, p=cal.CONTRACT_SHARES).astype(np.int8)

    net = np.empty(n, dtype=np.int8)
    months_active0 = np.empty(n, dtype=np.int64)
    u_net, u_ma = rng.random(n), rng.random(n)
    for ci, ct in enumerate(cal.CONTRACT_TYPES):
        sel = contract == ci
        net[sel] = np.searchsorted(np.cumsum(cal.NET_GIVEN_CONTRACT[ct]), u_net[sel], side="right").clip(max=2)
        months_active0[sel] = np.round(_inverse_cdf(u_ma[sel], cal.MONTHS_ACTIVE_QUANTILES[ct])).astype(np.int64)

    def by_net(table: Mapping[str, float]) -> FloatArray:
        return np.asarray([table.get(ns, 0.0) for ns in cal.NET_SERVICES])[net]

    tv = rng.random(n) < by_net(cal.P_TV_GIVEN_NET)
    movies = rng.random(n) < _p_movies(net, tv)
    p_paperless, p_senior = by_net(cal.P_PAPERLESS_GIVEN_NET), by_net(cal.P_SENIOR_GIVEN_NET)
    paperless = rng.random(n) < p_paperless
    senior = rng.random(n) < p_senior
    male = rng.random(n) < cal.P_MALE
    family = rng.random(n) < cal.P_FAMILY
    dependents = rng.random(n) < np.where(
        family, cal.P_DEPENDENTS_GIVEN_FAMILY[True], cal.P_DEPENDENTS_GIVEN_FAMILY[False]
    )

    # Fee rank follows tenure rank with probability FEE_TENURE_LINK (a mixture copula: keeps
    # the fee marginal exact and gives the course data's rank correlation).
    u_fee = np.where(rng.random(n) < by_net(cal.FEE_TENURE_LINK), u_ma, rng.random(n))
    fee = np.empty(n)
    no_net = net == _NO_NET
    fee[no_net] = _inverse_cdf(u_fee[no_net], cal.FEE_NO_NET_QUANTILES)
    for ns, (base, c_tv, c_movies) in cal.FEE_LINEAR.items():
        sel = net == cal.NET_SERVICES.index(ns)
        resid = _inverse_cdf(u_fee[sel], cal.FEE_RESIDUAL_QUANTILES[ns])
        fee[sel] = base + c_tv * tv[sel] + c_movies * movies[sel] + resid
    fee = _round_to(np.clip(fee, cal.FEE_MIN, cal.FEE_MAX), 0.05)

    ratio_sd = cal.TOTAL_PAID_RATIO_SD / np.sqrt(np.maximum(months_active0, 1))
    ratio = np.clip(1.0 + ratio_sd * rng.standard_normal(n), 0.6, 1.6)
    ratio[months_active0 <= 1] = 1.0
    total_paid0 = np.round(fee * months_active0 * ratio, 2)

    # Signup: months_active whole months (≈30.44 days) plus part of a month before month 0's as-of.
    days_back = np.floor(months_active0 * 30.44 + rng.random(n) * 30.0).astype(np.int32)
    signup_date = pa.array((start_as_of - date(1970, 1, 1)).days - days_back, type=pa.int32()).cast(pa.date32())

    def continuous_base(spec: tuple[float, float, float]) -> FloatArray:
        mean, sd, noise = spec
        base: FloatArray = mean + np.sqrt(sd**2 - noise**2) * rng.standard_normal(n)
        return base

    return _Population(
        user_id=user_id,
        signup_date=signup_date,
        male=male,
        senior=senior,
        family=family,
        dependents=dependents,
        contract=contract,
        net=net,
        tv=tv,
        movies=movies,
        paperless=paperless,
        fee=fee,
        months_active0=months_active0,
        total_paid0=total_paid0,
        watch_base=continuous_base(cal.WATCH_HOURS),
        session_base=continuous_base(cal.SESSION_MINS),
        resolution_base=continuous_base(cal.RESOLUTION_HRS),
        devices0=rng.integers(1, cal.DEVICES_MAX + 1, n),
        skips0=rng.poisson(cal.SKIPS_POISSON, n),
        rebuffer0=rng.poisson(cal.REBUFFER_POISSON, n),
        failed0=rng.poisson(cal.FAILED_POISSON, n),
        tickets0=rng.poisson(cal.TICKETS_POISSON, n),
    )


def _month_features(pop: _Population, seed: int, month: int) -> dict[str, AnyArray]:
    """The undrifted monthly columns: same marginal every month, per-user persistence."""
    n = len(pop.user_id)

    def continuous(name: str, base: FloatArray, noise: float, lo: float, hi: float = np.inf) -> FloatArray:
        return np.clip(base + noise * _rng(seed, name, month).standard_normal(n), lo, hi)

    def count(name: str, base: IntArray, q: float, draw: Callable[[np.random.Generator], IntArray]) -> IntArray:
        if month == 0:
            return base
        rng = _rng(seed, name, month)
        redraw = rng.random(n) < q
        return np.where(redraw, draw(rng), base)

    return {
        "net": pop.net,
        "contract": pop.contract,
        "tv": pop.tv,
        "movies": pop.movies,
        "monthly_fee": pop.fee,
        "watch_hours_30d": np.round(continuous("watch_hours_30d", pop.watch_base, cal.WATCH_HOURS[2], 0.0), 4),
        "avg_session_mins_7d": np.round(
            continuous("avg_session_mins_7d", pop.session_base, cal.SESSION_MINS[2], 1.0), 4
        ),
        "ticket_avg_resolution_hrs_90d": np.round(
            continuous(
                "ticket_avg_resolution_hrs_90d",
                pop.resolution_base,
                cal.RESOLUTION_HRS[2],
                cal.RESOLUTION_MIN,
                cal.RESOLUTION_MAX,
            ),
            1,
        ),
        "unique_devices_30d": count(
            "unique_devices_30d", pop.devices0, cal.DEVICES_RESAMPLE, lambda r: r.integers(1, cal.DEVICES_MAX + 1, n)
        ),
        "skips_7d": count("skips_7d", pop.skips0, cal.SKIPS_RESAMPLE, lambda r: r.poisson(cal.SKIPS_POISSON, n)),
        "rebuffer_events_7d": count(
            "rebuffer_events_7d", pop.rebuffer0, cal.REBUFFER_RESAMPLE, lambda r: r.poisson(cal.REBUFFER_POISSON, n)
        ),
        "failed_payments_90d": count(
            "failed_payments_90d", pop.failed0, cal.FAILED_RESAMPLE, lambda r: r.poisson(cal.FAILED_POISSON, n)
        ),
        "support_tickets_90d": count(
            "support_tickets_90d", pop.tickets0, cal.TICKETS_RESAMPLE, lambda r: r.poisson(cal.TICKETS_POISSON, n)
        ),
    }


_ROUNDING = {
    "monthly_fee": 0.05,
    "watch_hours_30d": 1e-4,
    "avg_session_mins_7d": 1e-4,
    "ticket_avg_resolution_hrs_90d": 0.1,
}


def _apply_numeric(values: AnyArray, name: str, drift: NumericDrift) -> AnyArray:
    out = np.maximum(values.astype(np.float64) * drift.scale + drift.shift, 0.0)
    if name in _ROUNDING:
        step = _ROUNDING[name]
        return np.round(np.round(out / step) * step, 4)
    return np.rint(out).astype(np.int64)


def _reassign(
    codes: npt.NDArray[np.int8], shares: Mapping[str, float], categories: tuple[str, ...], rng: np.random.Generator
) -> npt.NDArray[np.int8]:
    """Move the fewest users so that category counts hit the target shares exactly."""
    n = len(codes)
    current = np.bincount(codes, minlength=len(categories)).astype(np.float64)
    target = np.zeros(len(categories))
    listed = [categories.index(c) for c in shares]
    for c, s in shares.items():
        target[categories.index(c)] = s
    rest = [i for i in range(len(categories)) if i not in listed]
    remainder = 1.0 - sum(shares.values())
    if rest:
        weight = current[rest]
        target[rest] = remainder * (weight / weight.sum() if weight.sum() > 0 else 1.0 / len(rest))
    exact = target / target.sum() * n
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    out = codes.copy()
    movers: list[npt.NDArray[np.intp]] = []
    for k in range(len(categories)):
        surplus = int(current[k]) - int(counts[k])
        if surplus > 0:
            members = np.flatnonzero(codes == k)
            movers.append(rng.permutation(members)[:surplus])
    if not movers:
        return out
    pool = rng.permutation(np.concatenate(movers))
    deficits = np.maximum(counts - current.astype(np.int64), 0)
    out[pool] = np.repeat(np.arange(len(categories), dtype=np.int8), deficits)
    return out


def _apply_drift(feats: dict[str, AnyArray], pop: _Population, drift: DriftSpec, seed: int) -> dict[str, AnyArray]:
    out = dict(feats)
    for name, col_drift in drift.columns.items():
        # Month-independent streams: the same users switch in every drifted month.
        rng = _rng(seed, f"drift.{name}")
        if isinstance(col_drift, NumericDrift):
            out[name] = _apply_numeric(feats[name], name, col_drift)
        elif name == "contract_type":
            out["contract"] = _reassign(pop.contract, col_drift, CATEGORICAL_DRIFT_COLUMNS[name], rng)
        else:  # net_service: keep plan flags valid (NULL iff "No"); fees are left as they are
            net = _reassign(pop.net, col_drift, CATEGORICAL_DRIFT_COLUMNS[name], rng)
            # Users who gain internet get plan flags drawn as for their new service.
            gained = (pop.net == _NO_NET) & (net != _NO_NET)
            p_tv = np.asarray([cal.P_TV_GIVEN_NET.get(ns, 0.0) for ns in cal.NET_SERVICES])[net[gained]]
            tv, movies = pop.tv.copy(), pop.movies.copy()
            tv[gained] = rng.random(len(p_tv)) < p_tv
            movies[gained] = rng.random(len(p_tv)) < _p_movies(net[gained], tv[gained])
            out.update(net=net, tv=tv, movies=movies)
    return out


def _logit(feats: Mapping[str, AnyArray], pop: _Population, months_active: IntArray) -> FloatArray:
    c = cal.CHURN_COEF
    f = {k: np.asarray(v, dtype=np.float64) for k, v in feats.items() if k not in ("contract", "net", "tv", "movies")}
    contract, net = feats["contract"], feats["net"]
    z: FloatArray = np.asarray(
        c["Month-to-month"] * (contract == 0)
        + c["Two year"] * (contract == 2)
        + c["log1p_months_active"] * np.log1p(months_active)
        + c["Fiber optic"] * (net == 1)
        + c["No"] * (net == 2)
        + c["monthly_fee"] * (f["monthly_fee"] - _FEE_CENTER)
        + c["paperless_billing"] * pop.paperless
        + c["user_is_senior"] * pop.senior
        + c["has_dependents"] * pop.dependents
        + c["failed_payments_90d"] * f["failed_payments_90d"]
        + c["support_tickets_90d"] * f["support_tickets_90d"]
        + c["rebuffer_events_7d"] * (f["rebuffer_events_7d"] - cal.REBUFFER_POISSON)
        + c["watch_hours_30d"] * (f["watch_hours_30d"] - cal.WATCH_HOURS[0])
        + c["avg_session_mins_7d"] * (f["avg_session_mins_7d"] - cal.SESSION_MINS[0])
        + c["ticket_avg_resolution_hrs_90d"] * (f["ticket_avg_resolution_hrs_90d"] - cal.RESOLUTION_HRS[0]),
        dtype=np.float64,
    )
    return z


_SEGMENT_CODES = {"contract_type": "contract", "net_service": "net"}


def _change_concept(z: FloatArray, feats: Mapping[str, AnyArray], concept: ConceptDrift) -> FloatArray:
    """Mirror the churn logit around its mean inside the segment (``strength`` 1: who churns is
    reversed there; 0.5: the features no longer tell). Features are untouched."""
    codes = feats[_SEGMENT_CODES[concept.column]]
    segment = codes == CATEGORICAL_DRIFT_COLUMNS[concept.column].index(concept.category)
    if not segment.any():
        return z
    out = z.copy()
    mean = float(z[segment].mean())
    out[segment] = mean + (1.0 - 2.0 * concept.strength) * (z[segment] - mean)
    return out


def _solve_intercept(z: FloatArray, rate: float) -> float:
    """Intercept b with mean(sigmoid(z + b)) == rate (Newton's method)."""
    b = float(np.log(rate / (1 - rate)) - np.median(z))
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z + b)))
        gap = float(p.mean()) - rate
        if abs(gap) < 1e-10:
            break
        b -= gap / max(float((p * (1 - p)).mean()), 1e-12)
    return b


def _categorical(codes: npt.NDArray[np.int8], categories: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(categories))


def _month(pop: _Population, seed: int, month: int, as_of: date, drift: DriftSpec | None) -> MonthData:
    n = len(pop.user_id)
    months_active = pop.months_active0 + month
    feats = _month_features(pop, seed, month)
    fee_paid = pop.fee * month
    if drift is not None:
        drifted_before = sum(drift.applies(k) for k in range(1, month + 1))
        if drifted_before and "monthly_fee" in drift.columns:
            fee_drift = drift.columns["monthly_fee"]
            assert isinstance(fee_drift, NumericDrift)
            drifted_fee = _apply_numeric(pop.fee, "monthly_fee", fee_drift)
            fee_paid = pop.fee * (month - drifted_before) + drifted_fee * drifted_before
    rate = cal.CHURN_RATE
    active = drift is not None and drift.applies(month)
    # The churn model's intercept: solved so the month's expected churn rate is `rate`, or —
    # keep_churn_model — the undrifted month's, so P(churn | features) does not move at all.
    intercept: float | None = None
    if drift is not None and active:
        if drift.keep_churn_model:
            intercept = _solve_intercept(_logit(feats, pop, months_active), rate)
        feats = _apply_drift(feats, pop, drift, seed)
        rate = drift.churn_rate if drift.churn_rate is not None else rate
    # Labels: the churn model on this month's (possibly drifted) features.
    z = _logit(feats, pop, months_active)
    if drift is not None and active and drift.concept is not None:
        z = _change_concept(z, feats, drift.concept)
    z += intercept if intercept is not None else _solve_intercept(z, rate)
    churn = _rng(seed, "churn_label", month).random(n) < 1.0 / (1.0 + np.exp(-z))
    total_paid = np.round(pop.total_paid0 + fee_paid, 2)

    no_net = feats["net"] == _NO_NET
    uid = pop.user_id
    cols: dict[str, dict[str, pa.Array | AnyArray]] = {
        "users": {
            "user_id": uid,
            "signup_date": pop.signup_date,
            "user_gender": _categorical(pop.male.astype(np.int8), ("Female", "Male")),
            "user_is_senior": pop.senior,
            "has_family": pop.family,
            "has_dependents": pop.dependents,
        },
        "subscriptions": {
            "user_id": uid,
            "months_active": months_active,
            "plan_stream_tv": pa.array(feats["tv"], mask=no_net),
            "plan_stream_movies": pa.array(feats["movies"], mask=no_net),
            "contract_type": _categorical(feats["contract"], cal.CONTRACT_TYPES),
            "paperless_billing": pop.paperless,
            "monthly_fee": feats["monthly_fee"],
            "total_paid": total_paid,
            "net_service": _categorical(feats["net"], cal.NET_SERVICES),
        },
        "labels": {"user_id": uid, "churn_label": churn},
    }
    for table in (data_model.USAGE, data_model.PAYMENTS, data_model.SUPPORT):
        cols[table.name] = {"user_id": uid, **{c: feats[c] for c in table.column_names[1:]}}
    tables = {
        t.name: pa.table([cols[t.name][c] for c in t.column_names], names=t.column_names)
        for t in data_model.SOURCE_TABLES
    }
    return MonthData(index=month, as_of=as_of, tables=tables)


_BOOL_TEXT = pa.array(["False", "True"])


def _csv_column(col: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Course text format: booleans True/False, floats as Python repr (``16.0``), NULL empty."""
    if pa.types.is_boolean(col.type):
        return pa.chunked_array(
            [pa.DictionaryArray.from_arrays(pc.cast(c, pa.int8()), _BOOL_TEXT) for c in col.chunks],
            type=pa.dictionary(pa.int8(), pa.string()),
        )
    if pa.types.is_floating(col.type):
        values = pc.add(col, 0.0)  # no "-0"
        text = pc.cast(values, pa.string())
        whole = pc.equal(pc.floor(values), values)
        return pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    return col


def write_csv(table: pa.Table, path: Path) -> None:
    """Write one table in the course CSV format (unquoted header, LF line ends)."""
    body = pa.table([_csv_column(c) for c in table.columns], names=table.column_names)
    with open(path, "wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pa_csv.write_csv(body, fh, pa_csv.WriteOptions(include_header=False, quoting_style="none"))


def iter_months(
    months: int,
    users: int,
    seed: int,
    drift: DriftSpec | None = None,
    start_as_of: date = COURSE_START_AS_OF,
) -> Iterator[MonthData]:
    """Yield months ``0..months-1`` as in-memory tables (what ``generate_months`` writes)."""
    if months < 1 or users < 1:
        raise DriftSpecError(f"months and users must be >= 1, got months={months}, users={users}")
    if seed < 0:
        raise DriftSpecError(f"seed must be >= 0, got {seed}")
    if drift is not None and drift.from_month >= months:
        raise DriftSpecError(f"drift starts at month {drift.from_month} but only months 0..{months - 1} are generated")
    pop = _draw_population(seed, users, start_as_of)
    for month in range(months):
        yield _month(pop, seed, month, month_as_of(start_as_of, month), drift)


def generate_months(
    out_dir: Path,
    months: int,
    users: int,
    seed: int,
    drift: DriftSpec | None = None,
    start_as_of: date = COURSE_START_AS_OF,
    progress: Progress | None = None,
) -> list[Path]:
    """Write ``out_dir/month_000 …`` (six CSVs each, course format) and return the month directories."""
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    written: list[Path] = []
    say(f"drawing {users:,} users (seed {seed})" + (f", drift {drift.to_option()}" if drift else ""))
    for data in iter_months(months, users, seed, drift, start_as_of):
        month_dir = out_dir / month_dir_name(data.index)
        month_dir.mkdir(parents=True, exist_ok=True)
        for table in data_model.SOURCE_TABLES:
            write_csv(data.tables[table.name], month_dir / table.file_name)
        churn = pc.mean(pc.cast(data.tables["labels"]["churn_label"], pa.float64())).as_py()
        drifted = " (drifted)" if drift is not None and drift.applies(data.index) else ""
        say(f"{month_dir.name}: as_of {data.as_of}, churn {churn:.1%}{drifted} -> {month_dir}")
        written.append(month_dir)
    return written
