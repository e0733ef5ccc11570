"""The course baseline model: a scikit-learn Pipeline that handles its own
categoricals and missing values, then a RandomForest whose trees are bounded.

The course grew unbounded trees (``min_samples_leaf=1``, every tree on a bootstrap of every
training row): at 750,000 training rows the forest outgrew a 24 GB machine and its ONNX form
the API's budget. The bounds are settings chosen by measurement (benchmarks/README.md):
``min_samples_leaf``, ``max_depth`` and ``max_samples`` (bootstrap rows per tree). Every
effective value is logged with the run's params (:func:`forest_params`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from streamflow.core.data_model import CATEGORICAL_FEATURES, FLAG_FEATURES, NUMERIC_FEATURES
from streamflow.core.errors import OperationalError
from streamflow.core.settings import Settings

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


@dataclass(frozen=True)
class ForestParams:
    """The RandomForest's parameters for one fit (what the run logs)."""

    n_estimators: int
    min_samples_leaf: int
    max_depth: int | None
    max_samples: int | None  # bootstrap rows per tree; None = every training row
    class_weight: str = "balanced"
    max_features: str = "sqrt"

    def as_params(self) -> dict[str, object]:
        """MLflow params (None as the string "None", as scikit-learn prints it)."""
        return {k: ("None" if v is None else v) for k, v in asdict(self).items()}


def forest_params(settings: Settings, n_train: int | None = None) -> ForestParams:
    """The forest's parameters for ``n_train`` training rows: ``max_samples`` applies only when
    there are more training rows than it (scikit-learn refuses a bootstrap larger than the data;
    unknown ``n_train``: every row)."""
    cap = settings.max_samples
    subsample = cap is not None and n_train is not None and n_train > cap
    return ForestParams(
        n_estimators=settings.n_estimators,
        min_samples_leaf=settings.min_samples_leaf,
        max_depth=settings.max_depth,
        max_samples=cap if subsample else None,
    )


def build_preprocess() -> ColumnTransformer:
    """One-hot net_service (missing → "missing"), flags with NaN → -1 (22% of real users
    have no streaming-plan flags and must still be scored), numerics median-imputed."""
    return ColumnTransformer(
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


def build_forest(params: ForestParams, random_state: int, n_jobs: int = -1) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=params.n_estimators,
        class_weight=params.class_weight,
        max_features=params.max_features,
        min_samples_leaf=params.min_samples_leaf,
        max_depth=params.max_depth,
        max_samples=params.max_samples,
        random_state=random_state,
        n_jobs=n_jobs,
    )


def build_pipeline(settings: Settings, n_jobs: int = -1, n_train: int | None = None) -> Pipeline:
    """The preprocessing + the bounded forest for ``n_train`` training rows (see
    :func:`forest_params`)."""
    forest = build_forest(forest_params(settings, n_train), settings.random_seed, n_jobs)
    return Pipeline([("preprocess", build_preprocess()), ("model", forest)])
