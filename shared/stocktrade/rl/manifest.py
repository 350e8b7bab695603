"""The manifest stamped on every trained policy: what it was trained on and with what.

Pure functions over plain data: the training job passes in what it used and gets a JSON-safe
dict back, which goes into ``model_versions.manifest`` and next to the artifacts in the
object store. Nothing here touches storage.

A manifest answers, for any policy, the reproducibility rule of the design (seeds, data
ranges, package versions and config are stamped into every run): the data range and symbols,
the seed, the feature spec and the observation spec with its normalisation constants (so
backtest and live rebuild identical observations), the action mapping, the package versions,
a hash of the whole training config and the sha256 of every artifact file.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from stocktrade.errors import ValidationError

__all__ = [
    "MANIFEST_VERSION",
    "TRACKED_PACKAGES",
    "build_manifest",
    "canonical_json",
    "config_hash",
    "package_versions",
    "sha256_bytes",
    "sha256_file",
    "verify_files",
]

MANIFEST_VERSION = 1

TRACKED_PACKAGES = (
    "stocktrade",
    "numpy",
    "numba",
    "torch",
    "gymnasium",
    "stable-baselines3",
    "onnx",
    "onnxruntime",
)

_REQUIRED_TOP = ("version", "data", "seed", "feature_spec", "observation_spec", "files")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data give equal text.

    Raises:
        ValidationError: ``value`` holds something JSON cannot represent (NaN included).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"expected JSON-safe data for hashing; {exc}") from exc


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a config mapping."""
    return sha256_bytes(canonical_json(dict(config)).encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """sha256 (hex) of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not-installed"`` when absent), plus Python's."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


def _file_digest(value: bytes | str | Path) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"sha256": sha256_bytes(data), "bytes": len(data)}
    path = Path(value)
    if not path.is_file():
        raise ValidationError(f"manifest file expected at {path}; found nothing")
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(f"data range datetimes must be timezone-aware; found {value}")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def build_manifest(
    *,
    symbols: Iterable[str],
    timeframe: str,
    start: Any,
    end: Any,
    seed: int,
    feature_spec: Mapping[str, Any],
    observation_spec: Mapping[str, Any],
    env_config: Mapping[str, Any],
    train_config: Mapping[str, Any],
    files: Mapping[str, bytes | str | Path],
    action_labels: Iterable[str] = (),
    metrics: Mapping[str, float] | None = None,
    versions: Mapping[str, str] | None = None,
    created_at: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a policy manifest (JSON-safe dict).

    Args:
        symbols: symbols the policy was trained on.
        timeframe: bar timeframe (``"1d"``...).
        start: first bar of the training range (aware datetime or ISO string).
        end: last bar of the training range.
        seed: the training seed.
        feature_spec: ``FeatureSpec.to_dict()``.
        observation_spec: ``ObservationSpec.to_dict()`` (window, normalisation constants).
        env_config: the env config (costs, action mode, reward) as a dict.
        train_config: the PPO config as a dict; its hash is ``config_hash`` below.
        files: artifact name -> bytes or path; each gets its sha256 and size.
        action_labels: names of the discrete actions in index order (``HOLD``, ``BUY``...).
        metrics: evaluation metrics, if any.
        versions: package versions; :func:`package_versions` when omitted.
        created_at: manifest time (aware); now when omitted.
        extra: anything else the caller wants stamped (run id, git sha ...).

    Returns:
        The manifest dict. ``config_hash`` covers env config, train config, feature and
        observation specs, symbols, range and seed, so two runs with equal hashes were
        configured identically.

    Raises:
        ValidationError: a file is missing, a datetime is naive or a value is not JSON-safe.
    """
    symbol_list = sorted({str(s) for s in symbols})
    if not symbol_list:
        raise ValidationError("manifest needs at least one symbol; found none")
    data = {
        "symbols": symbol_list,
        "timeframe": str(timeframe),
        "start": _iso(start),
        "end": _iso(end),
    }
    hashed = {
        "data": data,
        "seed": int(seed),
        "feature_spec": dict(feature_spec),
        "observation_spec": dict(observation_spec),
        "env_config": dict(env_config),
        "train_config": dict(train_config),
    }
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        **hashed,
        "action_labels": [str(a) for a in action_labels],
        "config_hash": config_hash(hashed),
        "packages": dict(versions) if versions is not None else package_versions(),
        "files": {name: _file_digest(value) for name, value in sorted(files.items())},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "created_at": _iso(created_at or datetime.now(UTC)),
    }
    if extra:
        manifest["extra"] = dict(extra)
    # Round-trip through canonical JSON so a non-JSON value fails here, not in the database.
    return dict(json.loads(canonical_json(manifest)))


def verify_files(manifest: Mapping[str, Any], files: Mapping[str, bytes | str | Path]) -> None:
    """Check artifacts against the manifest's sha256 entries.

    Raises:
        ValidationError: the manifest is malformed, a listed file is missing from ``files``
            or its sha256 differs.
    """
    missing_keys = [k for k in _REQUIRED_TOP if k not in manifest]
    if missing_keys:
        raise ValidationError(
            f"manifest keys {list(_REQUIRED_TOP)} expected; missing {missing_keys}"
        )
    listed = manifest["files"]
    for name, entry in listed.items():
        if name not in files:
            raise ValidationError(f"artifact {name!r} listed in the manifest was not supplied")
        found = _file_digest(files[name])["sha256"]
        if found != entry["sha256"]:
            raise ValidationError(
                f"artifact {name!r}: sha256 {entry['sha256']} expected; found {found}"
            )
