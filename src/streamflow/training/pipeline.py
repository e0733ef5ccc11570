"""The course baseline model: a scikit-learn Pipeline that handles its own
categoricals and missing values, then a RandomForest."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from streamflow.schema import CATEGORICAL_FEATURES, FLAG_FEATURES, NUMERIC_FEATURES
from streamflow.settings import Settings


def build_pipeline(settings: Settings, n_jobs: int = -1) -> Pipeline:
    """One-hot net_service (missing → "missing"), flags with NaN → -1 (22% of real users
    have no streaming-plan flags and must still be scored), numerics median-imputed."""
    preprocess = ColumnTransformer(
        [
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                CATEGORICAL_FEATURES,
            ),
            ("flags", SimpleImputer(strategy="constant", fill_value=-1.0), FLAG_FEATURES),
            ("num", SimpleImputer(strategy="median"), NUMERIC_FEATURES),
        ],
        remainder="drop",
    )
    model = RandomForestClassifier(
        n_estimators=settings.n_estimators,
        class_weight="balanced",
        max_features="sqrt",
        random_state=settings.random_seed,
        n_jobs=n_jobs,
    )
    return Pipeline([("preprocess", preprocess), ("model", model)])
