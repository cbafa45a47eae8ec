"""Model artifacts on disk: ``MODEL_ARTIFACT_DIR/<model_id>.cbm`` (CatBoost's own format) and
the SHA-256 recorded in ``model_registry``. Loading checks the file against it: a missing,
truncated or altered artifact is an ``ArtifactError`` naming the model and the path, and the
caller keeps the model it had."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ohlcv.errors import OhlcvError


class ArtifactError(OhlcvError):
    """A model artifact is missing or does not match its recorded checksum."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_path(artifact_dir: Path, model_id: str) -> Path:
    return artifact_dir / f"{model_id}.cbm"


def store_artifact(artifact_dir: Path, model_id: str, data: bytes) -> tuple[Path, str]:
    """Write ``data`` atomically (temp file + rename); returns (path, sha256)."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    path = artifact_path(artifact_dir, model_id)
    fd, tmp = tempfile.mkstemp(dir=artifact_dir, prefix=f".{model_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, hashlib.sha256(data).hexdigest()


def read_verified(path: Path, sha256: str, model_id: str) -> bytes:
    """The artifact's bytes, after checking them against ``sha256``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"model {model_id}: artifact {path} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"model {model_id}: artifact {path} cannot be read: {exc}") from exc
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ArtifactError(
            f"model {model_id}: artifact {path} does not match its checksum "
            f"(recorded {sha256[:12]}..., file {got[:12]}...): corrupt or replaced"
        )
    return data
