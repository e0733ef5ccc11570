"""The artefacts of a training run that are served or that the monitor relies on, and how their
integrity is recorded and checked (``docs/CONTRACTS.md``, section MLflow).

Training computes the sha256 of the exact bytes it logs for each artefact below and records it
twice: as a tag of the run and as a tag of the registered model version (same key). Whoever
loads an artefact recomputes the hash of the bytes it got and refuses them when it differs
(:class:`ArtifactIntegrityError`): the monitor's loader (``monitoring/production_model.py``),
the publication of a version (``training/registry.promote``) and the API (which checks the bytes
of the deployment record, ``streamflow.model.deployments``).

A leaf module (standard library + ``streamflow.core.errors``): the API imports it.
"""

from __future__ import annotations

import hashlib
import re

from streamflow.core.errors import OperationalError

ONNX_ARTIFACT = "onnx/model.onnx"  # the compiled pipeline: what the API serves and the monitor scores
CBPE_DIR = "cbpe"
CBPE_ARTIFACT = f"{CBPE_DIR}/calibration.json"  # CBPE calibration of the ONNX model's probabilities
TRAINED_USERS_ARTIFACT = f"{CBPE_DIR}/trained_user_ids.txt.gz"  # user ids of the training rows

# artefact path -> the run tag / model-version tag holding its sha256 (hex, lower case)
SHA256_TAGS: dict[str, str] = {
    ONNX_ARTIFACT: "onnx_sha256",
    CBPE_ARTIFACT: "cbpe_calibration_sha256",
    TRAINED_USERS_ARTIFACT: "trained_users_sha256",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ArtifactIntegrityError(OperationalError, RuntimeError):
    """An artefact whose bytes do not hash to the sha256 recorded at training (tampered with or
    corrupted), or a version without a recorded hash. Never downgraded to a warning."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def short(digest: str | None) -> str:
    """The first 12 hex digits (for messages)."""
    return (digest or "none")[:12]


def verify_sha256(data: bytes, expected: str | None, what: str) -> str:
    """The sha256 of ``data``; raises :class:`ArtifactIntegrityError` naming ``what`` when there
    is no valid expected hash or when it differs."""
    if not is_sha256(expected):
        raise ArtifactIntegrityError(f"{what}: no sha256 recorded (expected a 64-digit hex digest, got {expected!r})")
    actual = sha256_hex(data)
    if actual != expected:
        raise ArtifactIntegrityError(
            f"{what}: sha256 mismatch (recorded {short(expected)}…, got {short(actual)}… over {len(data):,} bytes): "
            "the artefact was modified after training; refused"
        )
    return actual
