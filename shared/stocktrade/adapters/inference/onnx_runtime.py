"""ONNX Runtime (CPU) policy inference: the CPU path of the inference port.

The policy graph follows one I/O contract, shared by the exporter
(:mod:`stocktrade.rl.export`), this runtime, the backtest ``OnnxPolicyStrategy``, the
``predict`` function and the TensorRT service:

* input ``"obs"``: float32 ``[batch, obs_dim]``
* outputs ``"logits"`` and ``"probs"``: float32 ``[batch, n_actions]`` (``probs`` = softmax of
  ``logits``); the deterministic action is ``argmax``.

``onnxruntime`` is imported inside the class, never at module import, so ``import stocktrade``
stays light for cold starts.

Latency: one session is created per runtime and reused. Single observations go through an
IOBinding bound once to preallocated numpy buffers, so a call copies the observation in, runs
the graph and reads the probabilities back without allocating ORT values or output arrays
(about 3 µs per call for a small MLP on one core; see ``bench/bench_rl.py``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stocktrade.errors import NotFoundError, ValidationError

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "OnnxPolicyRuntime"]

INPUT_NAME = "obs"
OUTPUT_NAMES = ("logits", "probs")

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _static_dim(dim: Any, what: str) -> int:
    if not isinstance(dim, int) or dim <= 0:
        raise ValidationError(f"ONNX policy {what} must be a fixed positive integer, found {dim!r}")
    return dim


class OnnxPolicyRuntime:
    """A policy served by ONNX Runtime on the CPU with one thread.

    Args:
        model: path to an ``.onnx`` file (``str`` or ``Path``) or the serialised model bytes.
        threads: intra-op threads; 1 (the default) is fastest for small policies and keeps
            functions predictable when several instances share a host.
        optimization: graph optimisation level, one of ``"disable"``, ``"basic"``,
            ``"extended"``, ``"all"``.

    Raises:
        NotFoundError: the model path does not exist.
        ValidationError: the bytes are not a loadable ONNX model or break the I/O contract.

    ``act_one`` reuses internal buffers under a lock, so one runtime may be shared by threads;
    ``logits_probs`` and ``act`` allocate their outputs and need no lock.
    """

    def __init__(
        self, model: str | bytes | Path, *, threads: int = 1, optimization: str = "all"
    ) -> None:
        import onnxruntime as ort

        if optimization not in _OPT_LEVELS:
            raise ValidationError(
                f"optimization must be one of {sorted(_OPT_LEVELS)}, found {optimization!r}"
            )
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise NotFoundError(f"ONNX policy file not found: {path}")
            source: str | bytes = str(path)
        elif isinstance(model, (bytes, bytearray, memoryview)):
            source = bytes(model)
        else:
            raise ValidationError(
                f"model must be a path or ONNX bytes, found {type(model).__name__}"
            )

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _OPT_LEVELS[optimization]
        )
        # Memory patterns and the arena pay off for large, varying tensors; for a tiny MLP at
        # batch 1 they only add bookkeeping (measured: equal p50, lower p99 without them).
        opts.enable_mem_pattern = False
        opts.enable_cpu_mem_arena = False
        # Spinning threads burn a core between calls; with one thread there is nothing to wake.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                source, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own pybind exception types
            raise ValidationError(f"cannot load ONNX policy: {exc}") from exc

        self.obs_dim, self.n_actions = self._check_contract()
        self._lock = threading.Lock()
        self._in = np.zeros((1, self.obs_dim), dtype=np.float32)
        self._in_row = self._in[0]
        self._logits = np.zeros((1, self.n_actions), dtype=np.float32)
        self._probs = np.zeros((1, self.n_actions), dtype=np.float32)
        self._probs_row = self._probs[0]
        self._logits_row = self._logits[0]
        binding = self._session.io_binding()
        binding.bind_input(
            INPUT_NAME, "cpu", 0, np.float32, [1, self.obs_dim], self._in.ctypes.data
        )
        binding.bind_output(
            "logits", "cpu", 0, np.float32, [1, self.n_actions], self._logits.ctypes.data
        )
        binding.bind_output(
            "probs", "cpu", 0, np.float32, [1, self.n_actions], self._probs.ctypes.data
        )
        self._binding = binding
        self._run_options = ort.RunOptions()
        # The public InferenceSession.run_with_iobinding validates graph-capture state on every
        # call (~20 µs in ORT 1.31); the underlying C session call does the same work for CPU
        # without it. Fall back to the public API if a future ORT drops these attributes.
        c_session = getattr(self._session, "_sess", None)
        c_binding = getattr(binding, "_iobinding", None)
        if c_session is not None and c_binding is not None:
            self._run_bound = lambda: c_session.run_with_iobinding(c_binding, self._run_options)
        else:  # pragma: no cover - depends on the ORT version
            self._run_bound = lambda: self._session.run_with_iobinding(binding, self._run_options)

    def _check_contract(self) -> tuple[int, int]:
        inputs = self._session.get_inputs()
        outputs = {o.name: o for o in self._session.get_outputs()}
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ValidationError(
                f"ONNX policy must have one input {INPUT_NAME!r}, found {[i.name for i in inputs]}"
            )
        if set(OUTPUT_NAMES) - set(outputs):
            raise ValidationError(
                f"ONNX policy must have outputs {list(OUTPUT_NAMES)}, found {list(outputs)}"
            )
        obs = inputs[0]
        if obs.type != "tensor(float)" or len(obs.shape) != 2:
            raise ValidationError(
                f"input 'obs' must be float32 [batch, obs_dim], found {obs.type} {obs.shape}"
            )
        obs_dim = _static_dim(obs.shape[1], "obs_dim")
        n_actions = -1
        for name in OUTPUT_NAMES:
            out = outputs[name]
            if out.type != "tensor(float)" or len(out.shape) != 2:
                raise ValidationError(
                    f"output {name!r} must be float32 [batch, n_actions], "
                    f"found {out.type} {out.shape}"
                )
            dim = _static_dim(out.shape[1], f"{name} n_actions")
            if n_actions not in (-1, dim):
                raise ValidationError(
                    f"outputs disagree on n_actions: logits {n_actions}, probs {dim}"
                )
            n_actions = dim
        return obs_dim, n_actions

    def _as_batch(self, obs: NDArray[Any]) -> NDArray[np.float32]:
        arr = np.asarray(obs)
        if arr.ndim != 2 or arr.shape[1] != self.obs_dim:
            raise ValidationError(
                f"obs must have shape [batch, {self.obs_dim}], found {list(arr.shape)}"
            )
        return np.ascontiguousarray(arr, dtype=np.float32)

    def logits_probs(self, obs: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Run the policy on a batch.

        Args:
            obs: ``[batch, obs_dim]`` observations (converted to float32 if needed).

        Returns:
            ``(logits, probs)``, each float32 ``[batch, n_actions]``.

        Raises:
            ValidationError: ``obs`` has the wrong shape.
        """
        batch = self._as_batch(obs)
        logits, probs = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return logits, probs

    def act(self, obs: NDArray[Any]) -> NDArray[np.int64]:
        """Deterministic actions (argmax of the logits) for a batch of observations."""
        logits, _ = self.logits_probs(obs)
        return np.argmax(logits, axis=1).astype(np.int64)

    def act_one(self, obs: NDArray[Any]) -> tuple[int, NDArray[np.float32]]:
        """Deterministic action and action probabilities for one observation.

        Args:
            obs: ``[obs_dim]`` observation (also accepts ``[1, obs_dim]``).

        Returns:
            ``(action, probs)``; ``probs`` is a fresh float32 ``[n_actions]`` array.

        Raises:
            ValidationError: ``obs`` has the wrong size.
        """
        if obs.size != self.obs_dim:
            raise ValidationError(
                f"obs must have {self.obs_dim} values, found shape {list(np.shape(obs))}"
            )
        with self._lock:
            self._in_row[:] = obs.reshape(-1) if obs.ndim != 1 else obs
            self._run_bound()
            # argmax of the logits, not the probs: float32 softmax can round two close logits
            # to equal probabilities, and `act` must agree with `act_one`.
            action = int(self._logits_row.argmax())
            probs = self._probs_row.copy()
        return action, probs
