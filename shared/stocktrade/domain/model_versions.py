"""Model versions: trained policies registered per agent name, and their promotion states.

Every training run registers one version (``version`` counts up per agent name from 1). Its
promotion gate then decides::

    registered ──▶ promoted ──▶ retired    (a newer version was promoted over it)
        └────────▶ rejected                (the gate found it no better than the baselines)

At most one version per agent name is ``promoted`` at a time: promoting one retires the
version it replaces, in the same transaction. A person may promote any version by hand
(``stocktrade models promote``), which is also how a retired or rejected version is rolled
back into service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["ModelStatus", "ModelVersion"]


class ModelStatus(StrEnum):
    """Where a model version is in its life."""

    REGISTERED = "registered"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    RETIRED = "retired"


@dataclass(frozen=True)
class ModelVersion:
    """One stored model version (a row of ``model_versions``).

    Attributes:
        id: the version id (a UUID as text).
        agent_name: the agent the policy serves; versions count up per agent name.
        version: 1, 2, ... within the agent name.
        status: see :class:`ModelStatus`.
        uri_onnx: where the ONNX policy is (``file://``, ``gs://`` or a store key).
        uri_sb3: where the stable-baselines3 zip is.
        sha256: sha256 (hex) of the ONNX file.
        manifest: the policy manifest (data range, seed, specs, package versions, hashes).
        gate: the promotion gate's decision and the metrics it compared (None before it ran).
        run_id: the training run that produced it.
        agent_id: the ``agents`` row of this name and owner, when one exists.
        owner: the owner of the training run (None for versions registered without a run).
        created_at, promoted_at: when it was registered and last promoted.
    """

    id: str
    agent_name: str
    version: int
    status: ModelStatus
    uri_onnx: str
    sha256: str
    uri_sb3: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    run_id: str | None = None
    agent_id: str | None = None
    owner: str | None = None
    created_at: datetime | None = None
    promoted_at: datetime | None = None

    @property
    def label(self) -> str:
        """``agent_name:version`` (what people type)."""
        return f"{self.agent_name}:{self.version}"
