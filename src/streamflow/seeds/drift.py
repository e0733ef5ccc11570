"""Planted drift for the synthetic seed generator: :class:`DriftSpec` and its CLI syntax.

Compact syntax (``parse_drift_option``)::

    ITEM[,ITEM...][@FROM[-TO]]

    ITEM := COLUMN*SCALE            multiply       watch_hours_30d*0.6
          | COLUMN+SHIFT            add            rebuffer_events_7d+3
          | COLUMN-SHIFT            subtract       skips_7d-1
          | COLUMN*SCALE+SHIFT      both (scale first)
          | COLUMN=CAT:SHARE[/CAT:SHARE...]        net_service=Fiber optic:0.7/DSL:0.2
          | churn_rate=RATE         target churn rate of the drifted months
          | concept=COLUMN:CAT[:STRENGTH]           concept=contract_type:Month-to-month
          | keep_churn_model        pure covariate shift: P(churn | features) stays that of
                                    the undrifted month (the churn rate follows the features)

``@FROM`` starts the drift at month FROM (default 1) and keeps it for every later month;
``@FROM-TO`` limits it to months FROM..TO inclusive. Example:
``"watch_hours_30d*0.6,rebuffer_events_7d+3@1"``.

Numeric results are clipped at 0 and rounded to the column's precision. Categorical drift
moves the fewest users needed (the same users in every drifted month); moving users into
or out of net_service "No" also blanks / draws their plan flags (NULL iff "No"), so keep
the "No" share to drift net_service alone; monthly_fee is not touched by it.

Categorical shares: listed categories get exactly that share of the users; unlisted
categories split the remainder in their current proportions. Listing every category
requires the shares to sum to 1.

Concept drift (``concept=``) changes no feature at all: inside the segment COLUMN == CAT the
label rule changes — the churn logit is mirrored around the segment's mean with STRENGTH in
(0, 1] (1, the default, reverses who churns within the segment; 0.5 erases the signal). Every
feature file stays byte-identical, so data drift sees nothing; a model trained on earlier
months loses accuracy on that segment, which only realized performance can see.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from streamflow.core.data_model import NUMERIC_FEATURES
from streamflow.core.errors import InputError
from streamflow.seeds.calibration import CONTRACT_TYPES, NET_SERVICES

# months_active is not drawn (it grows by one each month): every other numeric feature can drift.
NUMERIC_DRIFT_COLUMNS: tuple[str, ...] = tuple(f for f in NUMERIC_FEATURES if f != "months_active")
CATEGORICAL_DRIFT_COLUMNS: dict[str, tuple[str, ...]] = {
    "net_service": NET_SERVICES,
    "contract_type": CONTRACT_TYPES,
}
CHURN_RATE_KEY = "churn_rate"


class DriftSpecError(InputError, ValueError):
    """A planted-drift specification that cannot be applied (unknown column, bad share, bad months)."""


@dataclass(frozen=True)
class NumericDrift:
    """``new = old * scale + shift``, then clipped at 0 and rounded to the column's precision."""

    scale: float = 1.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and math.isfinite(self.shift)) or self.scale < 0:
            raise DriftSpecError(f"numeric drift needs a finite scale >= 0 and a finite shift, got {self}")


ColumnDrift = NumericDrift | Mapping[str, float]
CONCEPT_KEY = "concept"
# The demo's default data: month_001's churn rule is reversed for month-to-month subscribers (concept
# drift: no feature file changes), so the January model fails in February for a reason only its
# realized performance can show.
DEMO_DRIFT = "concept=contract_type:Month-to-month@1"
KEEP_CHURN_MODEL_KEY = "keep_churn_model"


@dataclass(frozen=True)
class ConceptDrift:
    """The label rule changes inside one segment (``column == category``); features do not move."""

    column: str
    category: str
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.column not in CATEGORICAL_DRIFT_COLUMNS:
            raise DriftSpecError(
                f"concept drift segments by {', '.join(CATEGORICAL_DRIFT_COLUMNS)}, got column {self.column!r}"
            )
        if self.category not in CATEGORICAL_DRIFT_COLUMNS[self.column]:
            allowed = ", ".join(CATEGORICAL_DRIFT_COLUMNS[self.column])
            raise DriftSpecError(f"concept drift: unknown {self.column} {self.category!r}; allowed: {allowed}")
        if not (math.isfinite(self.strength) and 0.0 < self.strength <= 1.0):
            raise DriftSpecError(f"concept drift strength must be in (0, 1], got {self.strength}")

    def to_option(self) -> str:
        strength = "" if self.strength == 1.0 else f":{self.strength:g}"
        return f"{CONCEPT_KEY}={self.column}:{self.category}{strength}"


@dataclass(frozen=True)
class DriftSpec:
    """Shifts planted in named columns for months ``from_month..to_month`` (inclusive; None = to the end).

    ``columns`` maps a numeric column to a :class:`NumericDrift` and a categorical column
    (net_service, contract_type) to target shares, e.g.
    ``DriftSpec({"watch_hours_30d": NumericDrift(scale=0.6), "net_service": {"Fiber optic": 0.7}})``.
    Labels of drifted months come from the churn model on the drifted features, with the
    month's churn rate held at the baseline (26.5 %) unless ``churn_rate`` sets another one.
    """

    columns: Mapping[str, ColumnDrift] = field(default_factory=dict)
    from_month: int = 1
    to_month: int | None = None
    churn_rate: float | None = None
    concept: ConceptDrift | None = None
    # True: drifted months keep the undrifted month's churn model (its intercept), so the churn
    # rate follows the shifted features — a pure covariate shift. False (default): the intercept
    # is re-solved so the month still churns at the baseline rate (a small change of P(y | x)).
    keep_churn_model: bool = False

    def __post_init__(self) -> None:
        checked: dict[str, ColumnDrift] = {}
        for name, drift in self.columns.items():
            if name in NUMERIC_DRIFT_COLUMNS:
                if not isinstance(drift, NumericDrift):
                    raise DriftSpecError(f"{name}: numeric columns take a NumericDrift, got {drift!r}")
                checked[name] = drift
            elif name in CATEGORICAL_DRIFT_COLUMNS:
                if isinstance(drift, NumericDrift) or not isinstance(drift, Mapping):
                    raise DriftSpecError(f"{name}: categorical columns take a mapping category -> share, got {drift!r}")
                checked[name] = MappingProxyType(_check_shares(name, drift))
            else:
                allowed = ", ".join((*NUMERIC_DRIFT_COLUMNS, *CATEGORICAL_DRIFT_COLUMNS))
                raise DriftSpecError(f"unknown drift column {name!r}; allowed: {allowed}")
        if not checked and self.churn_rate is None and self.concept is None:
            raise DriftSpecError("a drift spec needs at least one column, a churn_rate or a concept")
        if self.from_month < 0:
            raise DriftSpecError(f"from_month must be >= 0, got {self.from_month}")
        if self.to_month is not None and self.to_month < self.from_month:
            raise DriftSpecError(f"to_month ({self.to_month}) is before from_month ({self.from_month})")
        if self.keep_churn_model and self.churn_rate is not None:
            raise DriftSpecError(f"{KEEP_CHURN_MODEL_KEY} and {CHURN_RATE_KEY} exclude each other")
        if self.churn_rate is not None and not 0.0 < self.churn_rate < 1.0:
            raise DriftSpecError(f"churn_rate must be in (0, 1), got {self.churn_rate}")
        object.__setattr__(self, "columns", MappingProxyType(checked))

    def applies(self, month: int) -> bool:
        """Whether the drift is active in month index ``month``."""
        return month >= self.from_month and (self.to_month is None or month <= self.to_month)

    def to_option(self) -> str:
        """The compact CLI form of this spec (``parse_drift_option(spec.to_option()) == spec``)."""
        items: list[str] = []
        for name, drift in self.columns.items():
            if isinstance(drift, NumericDrift):
                text = name
                if drift.scale != 1.0:
                    text += f"*{drift.scale:g}"
                if drift.shift != 0.0 or drift.scale == 1.0:
                    text += f"{drift.shift:+g}"
                items.append(text)
            else:
                items.append(f"{name}=" + "/".join(f"{c}:{s:g}" for c, s in drift.items()))
        if self.churn_rate is not None:
            items.append(f"{CHURN_RATE_KEY}={self.churn_rate:g}")
        if self.concept is not None:
            items.append(self.concept.to_option())
        if self.keep_churn_model:
            items.append(KEEP_CHURN_MODEL_KEY)
        months = f"{self.from_month}" if self.to_month is None else f"{self.from_month}-{self.to_month}"
        return ",".join(items) + "@" + months


def _check_shares(column: str, shares: Mapping[str, float]) -> dict[str, float]:
    categories = CATEGORICAL_DRIFT_COLUMNS[column]
    if not shares:
        raise DriftSpecError(f"{column}: no category shares given")
    out: dict[str, float] = {}
    for cat, share in shares.items():
        if cat not in categories:
            raise DriftSpecError(f"{column}: unknown category {cat!r}; allowed: {', '.join(categories)}")
        share = float(share)
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            raise DriftSpecError(f"{column}: share of {cat!r} must be in [0, 1], got {share}")
        out[cat] = share
    total = sum(out.values())
    if total > 1.0 + 1e-9:
        raise DriftSpecError(f"{column}: shares sum to {total:g} > 1")
    if len(out) == len(categories) and abs(total - 1.0) > 1e-6:
        raise DriftSpecError(f"{column}: all categories listed, so shares must sum to 1 (got {total:g})")
    return out


_NUM = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
_NUMERIC_ITEM = re.compile(
    rf"^(?P<col>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\*\s*(?P<scale>{_NUM}))?\s*(?P<shift>[+-]\s*{_NUM})?$"
)
_MONTHS = re.compile(r"^(?P<start>[0-9]+)(?:-(?P<end>[0-9]+))?$")


def parse_drift_option(text: str) -> DriftSpec:
    """Parse the compact drift syntax of the module docstring; raise ValueError on bad text."""
    src = text.strip()
    if not src:
        raise DriftSpecError("empty drift option")
    body, at, months = src.partition("@")
    from_month, to_month = 1, None
    if at:
        match = _MONTHS.match(months.strip())
        if "@" in months or not match:
            raise DriftSpecError(f"bad month range {months!r} in drift option {text!r}; expected @N or @N-M")
        from_month = int(match["start"])
        to_month = int(match["end"]) if match["end"] is not None else None
    columns: dict[str, ColumnDrift] = {}
    churn_rate: float | None = None
    concept: ConceptDrift | None = None
    keep_churn_model = False
    for raw in body.split(","):
        item = raw.strip()
        if not item:
            raise DriftSpecError(f"empty item in drift option {text!r}")
        if item == KEEP_CHURN_MODEL_KEY:
            if keep_churn_model:
                raise DriftSpecError(f"{KEEP_CHURN_MODEL_KEY} given twice in {text!r}")
            keep_churn_model = True
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if eq:
            if name == CHURN_RATE_KEY:
                if churn_rate is not None:
                    raise DriftSpecError(f"{CHURN_RATE_KEY} given twice in {text!r}")
                churn_rate = _float(value, item)
                continue
            if name == CONCEPT_KEY:
                if concept is not None:
                    raise DriftSpecError(f"{CONCEPT_KEY} given twice in {text!r}")
                concept = _parse_concept(value, item)
                continue
            if name not in CATEGORICAL_DRIFT_COLUMNS:
                raise DriftSpecError(
                    f"{item!r}: '=' is for categorical columns ({', '.join(CATEGORICAL_DRIFT_COLUMNS)}) "
                    f", {CHURN_RATE_KEY} or {CONCEPT_KEY}"
                )
            drift: ColumnDrift = _parse_shares(name, value, item)
        else:
            match = _NUMERIC_ITEM.match(item)
            if not match or (match["scale"] is None and match["shift"] is None):
                raise DriftSpecError(
                    f"bad drift item {item!r}; expected COLUMN*SCALE, COLUMN+SHIFT or COLUMN=CAT:SHARE"
                )
            name = match["col"]
            scale = float(match["scale"]) if match["scale"] is not None else 1.0
            shift = float(match["shift"].replace(" ", "")) if match["shift"] is not None else 0.0
            drift = NumericDrift(scale=scale, shift=shift)
        if name in columns:
            raise DriftSpecError(f"column {name!r} given twice in drift option {text!r}")
        columns[name] = drift
    return DriftSpec(
        columns=columns,
        from_month=from_month,
        to_month=to_month,
        churn_rate=churn_rate,
        concept=concept,
        keep_churn_model=keep_churn_model,
    )


def _parse_concept(value: str, item: str) -> ConceptDrift:
    column, colon, rest = value.partition(":")
    column = column.strip()
    if not colon or column not in CATEGORICAL_DRIFT_COLUMNS:
        raise DriftSpecError(
            f"{item!r}: expected {CONCEPT_KEY}=COLUMN:CATEGORY[:STRENGTH] with COLUMN one of "
            f"{', '.join(CATEGORICAL_DRIFT_COLUMNS)}"
        )
    category, colon, strength = rest.rpartition(":") if rest.count(":") else (rest, "", "")
    canonical = {c.lower(): c for c in CATEGORICAL_DRIFT_COLUMNS[column]}
    key = canonical.get(category.strip().lower())
    if key is None:
        raise DriftSpecError(
            f"{item!r}: unknown {column} {category.strip()!r}; allowed: {', '.join(canonical.values())}"
        )
    return ConceptDrift(column, key, _float(strength, item) if colon else 1.0)


def _float(value: str, item: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise DriftSpecError(f"{item!r}: {value.strip()!r} is not a number") from None


def _parse_shares(column: str, value: str, item: str) -> dict[str, float]:
    canonical = {c.lower(): c for c in CATEGORICAL_DRIFT_COLUMNS[column]}
    shares: dict[str, float] = {}
    for part in value.split("/"):
        cat, colon, share = part.rpartition(":")
        cat = cat.strip()
        if not colon or not cat:
            raise DriftSpecError(f"{item!r}: expected CATEGORY:SHARE, got {part.strip()!r}")
        if cat.lower() not in canonical:
            raise DriftSpecError(f"{item!r}: unknown category {cat!r}; allowed: {', '.join(canonical.values())}")
        key = canonical[cat.lower()]
        if key in shares:
            raise DriftSpecError(f"{item!r}: category {key!r} given twice")
        shares[key] = _float(share, item)
    return shares
