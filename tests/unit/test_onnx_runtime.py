"""OnnxPolicyRuntime: the ONNX I/O contract, outputs, errors and lazy import."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime  # noqa: E402
from stocktrade.errors import NotFoundError, ValidationError  # noqa: E402

OBS_DIM = 12
N_ACTIONS = 3


def _weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(OBS_DIM, 16)) / 4).astype(np.float32)
    b1 = rng.normal(size=16).astype(np.float32)
    w2 = (rng.normal(size=(16, N_ACTIONS)) / 4).astype(np.float32)
    b2 = rng.normal(size=N_ACTIONS).astype(np.float32)
    return [w1, b1, w2, b2]


def _mlp_bytes(
    outputs: tuple[str, ...] = ("logits", "probs"),
    input_name: str = "obs",
    obs_dim: int | str = OBS_DIM,
) -> bytes:
    w1, b1, w2, b2 = _weights()
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", [input_name, "w1", "b1"], ["g1"]),
        helper.make_node("Tanh", ["g1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", obs_dim])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", N_ACTIONS])
            for name in outputs
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _reference(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w1, b1, w2, b2 = (w.astype(np.float64) for w in _weights())
    logits = np.tanh(obs.astype(np.float64) @ w1 + b1) @ w2 + b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def runtime() -> OnnxPolicyRuntime:
    return OnnxPolicyRuntime(_mlp_bytes())


def test_runtime_reads_obs_dim_and_n_actions_from_the_graph(runtime: OnnxPolicyRuntime) -> None:
    assert (runtime.obs_dim, runtime.n_actions) == (OBS_DIM, N_ACTIONS)


def test_runtime_session_uses_one_thread(runtime: OnnxPolicyRuntime) -> None:
    opts = runtime._session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)


def test_logits_and_probs_match_a_numpy_forward_pass(runtime: OnnxPolicyRuntime) -> None:
    obs = np.random.default_rng(1).normal(size=(64, OBS_DIM)).astype(np.float32)
    logits, probs = runtime.logits_probs(obs)
    ref_logits, ref_probs = _reference(obs)
    assert logits.dtype == np.float32 and probs.shape == (64, N_ACTIONS)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_act_is_the_argmax_of_the_logits(runtime: OnnxPolicyRuntime) -> None:
    obs = np.random.default_rng(2).normal(size=(200, OBS_DIM)).astype(np.float32)
    actions = runtime.act(obs)
    assert actions.dtype == np.int64
    np.testing.assert_array_equal(actions, _reference(obs)[0].argmax(axis=1))


def test_act_one_agrees_with_the_batch_path_row_by_row(runtime: OnnxPolicyRuntime) -> None:
    obs = np.random.default_rng(3).normal(size=(50, OBS_DIM)).astype(np.float32)
    _, batch_probs = runtime.logits_probs(obs)
    batch_actions = runtime.act(obs)
    for i in range(len(obs)):
        action, probs = runtime.act_one(obs[i])
        assert action == batch_actions[i]
        np.testing.assert_allclose(probs, batch_probs[i], atol=1e-7)


def test_act_one_returns_probs_that_later_calls_do_not_overwrite(
    runtime: OnnxPolicyRuntime,
) -> None:
    rng = np.random.default_rng(4)
    _, first = runtime.act_one(rng.normal(size=OBS_DIM).astype(np.float32))
    kept = first.copy()
    runtime.act_one(rng.normal(size=OBS_DIM).astype(np.float32) * 5)
    np.testing.assert_array_equal(first, kept)


def test_act_one_accepts_float64_and_a_single_row_batch(runtime: OnnxPolicyRuntime) -> None:
    obs = np.random.default_rng(5).normal(size=OBS_DIM)
    a64, p64 = runtime.act_one(obs)
    a_row, p_row = runtime.act_one(obs.astype(np.float32)[None, :])
    assert a64 == a_row
    np.testing.assert_allclose(p64, p_row, atol=1e-7)


def test_act_one_is_safe_to_share_between_threads(runtime: OnnxPolicyRuntime) -> None:
    obs = np.random.default_rng(6).normal(size=(8, OBS_DIM)).astype(np.float32)
    expected = runtime.act(obs)
    mismatches: list[int] = []

    def worker(i: int) -> None:
        for _ in range(300):
            if runtime.act_one(obs[i])[0] != expected[i]:
                mismatches.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(obs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


def test_a_model_file_path_loads_like_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "policy.onnx"
    path.write_bytes(_mlp_bytes())
    obs = np.ones((3, OBS_DIM), np.float32)
    from_path = OnnxPolicyRuntime(path).logits_probs(obs)[0]
    from_str = OnnxPolicyRuntime(str(path)).logits_probs(obs)[0]
    np.testing.assert_array_equal(from_path, from_str)
    np.testing.assert_allclose(from_path, _reference(obs)[0], atol=1e-5)


def test_wrong_obs_width_is_rejected_with_both_shapes(runtime: OnnxPolicyRuntime) -> None:
    with pytest.raises(ValidationError, match=r"\[batch, 12\].*\[4, 7\]"):
        runtime.logits_probs(np.zeros((4, 7), np.float32))
    with pytest.raises(ValidationError, match="12 values"):
        runtime.act_one(np.zeros(7, np.float32))


def test_missing_model_file_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"missing\.onnx"):
        OnnxPolicyRuntime(tmp_path / "missing.onnx")


def test_bytes_that_are_not_onnx_raise_validation_error() -> None:
    with pytest.raises(ValidationError, match="cannot load"):
        OnnxPolicyRuntime(b"not a model")


def test_a_graph_without_probs_breaks_the_contract() -> None:
    with pytest.raises(ValidationError, match="outputs"):
        OnnxPolicyRuntime(_mlp_bytes(outputs=("logits",)))


def test_a_graph_with_another_input_name_breaks_the_contract() -> None:
    with pytest.raises(ValidationError, match="'obs'"):
        OnnxPolicyRuntime(_mlp_bytes(input_name="x"))


def test_a_graph_with_a_dynamic_obs_dim_breaks_the_contract() -> None:
    with pytest.raises(ValidationError, match="obs_dim"):
        OnnxPolicyRuntime(_mlp_bytes(obs_dim="d"))


def test_importing_stocktrade_and_the_adapter_module_does_not_import_onnxruntime() -> None:
    code = (
        "import sys, stocktrade, stocktrade.adapters.inference.onnx_runtime;"
        "print('onnxruntime' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
