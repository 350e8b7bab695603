"""Observations: layout, training-range fit, batch == single, JSON manifests."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from stocktrade.errors import ValidationError
from stocktrade.quant.features import FeatureSpec, compute_features
from stocktrade.quant.observation import (
    DEFAULT_FEATURE_NAMES,
    NormalisedFeatures,
    ObservationSpec,
    normalise,
    observation_at,
    observations_batch,
)

FEATURES = FeatureSpec()


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(3)
    n = 600
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    volume = rng.lognormal(13.0, 0.4, n)
    return compute_features(close, close, close, close, volume, FEATURES)


@pytest.fixture(scope="module")
def spec(features) -> ObservationSpec:
    return ObservationSpec().fit(features, FEATURES.names(), FEATURES.warmup, 400)


def test_default_spec_observes_return_rsi_macd_volume_z_and_volatility():
    spec = ObservationSpec()
    assert spec.feature_names == DEFAULT_FEATURE_NAMES
    assert set(DEFAULT_FEATURE_NAMES) <= set(FEATURES.names())
    assert (spec.window, spec.clip, spec.include_position) == (10, 5.0, True)
    assert spec.obs_dim == 10 * 5 + 1 + 1


def test_fit_uses_only_the_training_rows(features, spec):
    cols = [FEATURES.names().index(n) for n in spec.feature_names]
    train = features[FEATURES.warmup : 400][:, cols]
    np.testing.assert_allclose(spec.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(spec.std, train.std(axis=0), rtol=1e-12)
    changed = features.copy()
    changed[400:] *= 1000.0
    changed[: FEATURES.warmup] = 7.0
    refit = ObservationSpec().fit(changed, FEATURES.names(), FEATURES.warmup, 400)
    assert refit == spec


def test_fit_ignores_warmup_nans_and_guards_zero_std(features):
    flat = features.copy()
    flat[:, FEATURES.names().index("ret")] = 0.25
    spec = ObservationSpec().fit(flat, FEATURES.names(), 0, 400)
    assert spec.mean is not None and spec.std is not None
    assert np.isfinite(spec.mean).all()
    assert spec.std[0] == 1.0 and spec.mean[0] == 0.25


def test_normalise_zscores_clips_and_zeroes_only_warmup_nans(features, spec):
    norm = normalise(features, spec)
    assert isinstance(norm, NormalisedFeatures)
    assert norm.dtype == np.float32 and norm.shape == (len(features), spec.n_features)
    assert not norm.flags.writeable
    cols = [FEATURES.names().index(n) for n in spec.feature_names]
    raw = features[:, cols]
    expected = np.clip((raw - np.array(spec.mean)) / np.array(spec.std), -5.0, 5.0)
    w = FEATURES.warmup
    np.testing.assert_array_equal(norm[w:], expected[w:].astype(np.float32))
    assert np.abs(norm).max() <= 5.0
    assert (np.asarray(norm)[np.isnan(raw)] == 0.0).all()
    assert not np.isnan(raw[w:]).any()


def test_observation_stacks_window_rows_oldest_first_then_position_then_sentiment(features, spec):
    norm = normalise(features, spec)
    t = 123
    obs = observation_at(norm, t, -1.0, 0.3)
    assert obs.dtype == np.float32 and obs.shape == (spec.obs_dim,)
    np.testing.assert_array_equal(obs[:-2], np.asarray(norm[t - 9 : t + 1]).reshape(-1))
    assert obs[-2] == -1.0
    assert obs[-1] == np.float32(0.3)


def test_rows_before_the_first_bar_are_zero_padded(features, spec):
    norm = normalise(features, spec)
    obs = observation_at(norm, 2, 0.5)
    f = spec.n_features
    assert (obs[: 7 * f] == 0.0).all()
    np.testing.assert_array_equal(obs[7 * f : 10 * f], np.asarray(norm[:3]).reshape(-1))
    assert obs[-2] == 0.5 and obs[-1] == 0.0


def test_observation_at_t_does_not_see_later_rows(features, spec):
    t = 300
    before = observation_at(normalise(features, spec), t, 1.0)
    changed = features.copy()
    changed[t + 1 :] = -changed[t + 1 :] * 3.0
    after = observation_at(normalise(changed, spec), t, 1.0)
    assert before.tobytes() == after.tobytes()


def test_batch_equals_observation_at_row_by_row(features, spec):
    norm = normalise(features, spec)
    rng = np.random.default_rng(0)
    ts = rng.integers(0, len(features), 200)
    pos = rng.choice([-1.0, 0.0, 1.0], 200)
    sent = rng.uniform(-1, 1, 200)
    batch = observations_batch(norm, ts, pos, sent)
    assert batch.dtype == np.float32 and batch.shape == (200, spec.obs_dim)
    for i, t in enumerate(ts):
        assert batch[i].tobytes() == observation_at(norm, int(t), pos[i], sent[i]).tobytes()
    scalar = observations_batch(norm, ts, 0.25)
    assert (scalar[:, -2] == 0.25).all() and (scalar[:, -1] == 0.0).all()
    assert observations_batch(norm, [], 0.0).shape == (0, spec.obs_dim)
    with pytest.raises(ValidationError, match="position"):
        observations_batch(norm, ts, pos[:5])


def test_without_position_slot_sentiment_is_last(features, spec):
    no_pos = ObservationSpec(include_position=False, window=3).fit(
        features, FEATURES.names(), FEATURES.warmup, 400
    )
    assert no_pos.obs_dim == 3 * 5 + 1
    norm = normalise(features, no_pos)
    obs = observation_at(norm, 100, 1.0, 0.7)
    assert obs.shape == (16,) and obs[-1] == np.float32(0.7)
    batch = observations_batch(norm, np.array([100]), 1.0, 0.7)
    assert batch[0].tobytes() == obs.tobytes()


def test_plain_arrays_need_the_spec_and_then_give_the_same_observation(features, spec):
    norm = normalise(features, spec)
    plain = np.array(norm)
    assert (
        observation_at(plain, 50, 1.0, spec=spec).tobytes()
        == observation_at(norm, 50, 1.0).tobytes()
    )
    with pytest.raises(ValidationError, match="spec="):
        observation_at(plain, 50, 1.0)


def test_normalised_features_survive_pickling_and_slicing(features, spec):
    norm = normalise(features, spec)
    restored = pickle.loads(pickle.dumps(norm))
    assert isinstance(restored, NormalisedFeatures) and restored.window == spec.window
    assert observation_at(restored, 77, 0.0).tobytes() == observation_at(norm, 77, 0.0).tobytes()
    tail = norm[100:]
    assert (
        observation_at(tail, 0, 0.0).tobytes()
        == np.concatenate([np.zeros(9 * spec.n_features), np.asarray(norm[100]), [0.0, 0.0]])
        .astype(np.float32)
        .tobytes()
    )


def test_out_of_range_t_and_unfitted_spec_are_rejected(features, spec):
    norm = normalise(features, spec)
    with pytest.raises(ValidationError, match="t="):
        observation_at(norm, len(features), 0.0)
    with pytest.raises(ValidationError, match="t="):
        observation_at(norm, -1, 0.0)
    with pytest.raises(ValidationError, match="max"):
        observations_batch(norm, np.array([0, len(features)]), 0.0)
    with pytest.raises(ValidationError, match="fit"):
        normalise(features, ObservationSpec())
    with pytest.raises(ValidationError, match="start"):
        ObservationSpec().fit(features, FEATURES.names(), 10, 10)


def test_spec_round_trips_through_json_for_model_manifests(spec):
    text = json.dumps(spec.to_dict(), allow_nan=False)
    restored = ObservationSpec.from_dict(json.loads(text))
    assert restored == spec and restored.obs_dim == spec.obs_dim
    with pytest.raises(ValidationError, match="expected"):
        ObservationSpec.from_dict({**spec.to_dict(), "extra": 1})
    with pytest.raises(ValidationError, match="obs_dim"):
        ObservationSpec.from_dict({**spec.to_dict(), "obs_dim": 3})


def test_unknown_feature_names_are_rejected(features):
    with pytest.raises(ValidationError, match="not_a_feature"):
        ObservationSpec(feature_names=("ret", "not_a_feature")).fit(
            features, FEATURES.names(), 50, 100
        )


def test_live_observation_from_the_last_window_rows_equals_the_batch_one(spec):
    from stocktrade.quant.features import IncrementalFeatures

    rng = np.random.default_rng(11)
    n = 120
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    volume = rng.uniform(1e3, 1e4, n)
    batch = normalise(compute_features(close, close, close, close, volume, FEATURES), spec)
    inc = IncrementalFeatures(FEATURES)
    rows: list[np.ndarray] = []
    for i in range(n):
        rows.append(inc.update(close[i], close[i], close[i], close[i], volume[i]))
        last = np.array(rows[-spec.window :])
        live = observation_at(normalise(last, spec), len(last) - 1, 1.0, 0.1)
        assert live.tobytes() == observation_at(batch, i, 1.0, 0.1).tobytes(), i
