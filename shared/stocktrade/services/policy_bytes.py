"""Read a stored policy's ONNX bytes and check them against the model version's sha256.

Shared by the two places that load a policy to run it: :class:`~stocktrade.services.predict.
PolicyPredictor` (the predict function) and :class:`~stocktrade.services.agents.PolicyRuntimes`
(the chain agents). Neither runs a file that is not the one registered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from stocktrade.errors import PermanentError

__all__ = ["read_verified_policy"]


def read_verified_policy(
    read: Callable[[str], bytes], uri: str, sha256: str, *, model_version_id: object
) -> bytes:
    """The bytes at ``uri``, checked to hash to ``sha256``.

    Args:
        read: ``uri -> bytes`` (``file://``, ``gs://`` or a store key).
        uri: where the model version's ONNX file is.
        sha256: the hex digest recorded for it.
        model_version_id: the model version (named in the error).

    Raises:
        PermanentError: the file's sha256 is not the recorded one.
    """
    data = read(uri)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise PermanentError(
            f"model version {model_version_id} at {uri} has sha256 "
            f"{digest[:12]}..., expected {sha256[:12]}..."
        )
    return data
