"""Model-ready frames read from a seeds directory in the course CSV format (the generator's
output in unit tests, the course data in integration tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from streamflow.core.data_model import ENTITY, FEATURE_DTYPES, FEATURES, FLAG_FEATURES, LABEL, SOURCE_TABLES

# Every source table but users: together they hold the 14 features and the label.
FEATURE_FILES = tuple(t.file_name for t in SOURCE_TABLES if t.name != "users")


def month_frame(month_dir: Path) -> pd.DataFrame:
    """user_id, the 14 features in FEATURE_DTYPES and churn_label, straight from the CSVs
    (booleans → 1.0 / 0.0 / NaN; blank plan flags stay NaN)."""
    frame: pd.DataFrame | None = None
    for name in FEATURE_FILES:
        part = pd.read_csv(month_dir / name, dtype=str, keep_default_na=False)
        frame = part if frame is None else frame.merge(part, on=ENTITY, how="inner")
    assert frame is not None
    flags = {"True": 1.0, "False": 0.0, "": np.nan}
    out = pd.DataFrame({ENTITY: frame[ENTITY].astype(object)})
    for col in FEATURES:
        dtype = FEATURE_DTYPES[col]
        if col in FLAG_FEATURES:
            out[col] = frame[col].map(flags).astype("float64")
        elif dtype == "object":
            out[col] = frame[col].replace("", None).astype(object)
        else:
            out[col] = pd.to_numeric(frame[col]).astype(dtype)
    out[LABEL] = frame[LABEL].map({"True": 1, "False": 0}).astype("int64")
    return out
