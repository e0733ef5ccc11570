"""The course baseline model: a scikit-learn Pipeline that handles its own
categoricals and missing values, then a RandomForest."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from streamflow.errors import OperationalError
from streamflow.schema import CATEGORICAL_FEATURES, FLAG_FEATURES, NUMERIC_FEATURES
from streamflow.settings import Settings

# The types skops may rebuild when the logged scikit-learn model is loaded, beyond skops' own
# defaults (builtins, numpy arrays, scikit-learn estimators): fixed here, in code, for the pipeline
# below — never computed from a model (a model that names its own trusted types can name any).
# Training asserts the fitted pipeline needs no other type (check_trusted_types). Nothing in
# StreamFlow loads the pickled/skops model (the API and the monitor use the ONNX artefact); the
# list is what MLflow records with the model for anyone who does.
TRUSTED_SKOPS_TYPES: tuple[str, ...] = ("numpy.dtype", "sklearn.tree._tree.Tree")


class UntrustedModelTypesError(OperationalError, TypeError):
    """The fitted pipeline needs a type outside TRUSTED_SKOPS_TYPES (the pipeline changed: review the
    new types and add them in code)."""


def check_trusted_types(pipeline: Any) -> list[str]:
    """Serialize ``pipeline`` with skops and check that every type skops does not trust by default
    is in :data:`TRUSTED_SKOPS_TYPES`; returns that list (what ``log_model`` is given)."""
    import skops.io as sio

    needed = sorted(set(sio.get_untrusted_types(data=sio.dumps(pipeline))))
    extra = [t for t in needed if t not in TRUSTED_SKOPS_TYPES]
    if extra:
        raise UntrustedModelTypesError(
            f"the fitted pipeline needs skops types outside streamflow.training.pipeline.TRUSTED_SKOPS_TYPES: {extra}; "
            "review them and extend the list in code"
        )
    return list(TRUSTED_SKOPS_TYPES)


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
