"""The trading environment: one symbol's bars as a gymnasium ``Env``.

Same decision code everywhere (design rule 1): the observation is built by
:mod:`stocktrade.quant.observation` from :mod:`stocktrade.quant.features`, actions map to
target positions with :mod:`stocktrade.domain.actions`, and every fill, fee and slippage
comes from :func:`stocktrade.sim.kernels.execute_target`, the kernel the backtest engine and
the paper broker use. An agent therefore sees, trades and is charged exactly as it would be
in a backtest with the same :class:`~stocktrade.domain.costs.CostModel` and fill rule.

Timing (point in time, design rule 2): a step at bar ``t`` sees the observation built from
bars ``0..t`` and the position held at the close of ``t``; the chosen target is filled at
bar ``t+1``'s open (``FillRule.NEXT_OPEN``; ``CLOSE`` fills at bar ``t``'s close), the
portfolio is marked at bar ``t+1``'s close, and the reward is the change of that mark. The
next observation is bar ``t+1``'s.

Speed: everything that does not depend on the agent's actions (features, normalisation,
the observation rows) is computed once in :class:`EnvData`; a step is one numba call that
fills, marks, scores and writes the next observation (~1 µs on one core). The per-step
accounting (:func:`advance`) is shared with :class:`stocktrade.rl.vec_env.TradingVecEnv`,
so a batched env produces the same transitions as single envs.

Rewards (``EnvConfig.reward``), all net of fees and slippage because both are paid from
cash before the mark:

* ``"pnl"``: change in portfolio value divided by the initial cash;
* ``"log_return"``: ``log(equity_{t+1} / equity_t)``;
* ``"risk_adjusted"``: ``r - risk_aversion * r**2`` with ``r`` the log return (a
  mean-variance utility per step: large moves either way cost).

Further shaping (differential Sharpe ratio, drawdown penalty) lives in
:mod:`stocktrade.rl.wrappers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numba import njit
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stocktrade.data.arrays import BarArrays
from stocktrade.domain.actions import Action, action_target_table
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.errors import ConflictError, ValidationError
from stocktrade.quant.features import FeatureSpec, compute_features
from stocktrade.quant.observation import ObservationSpec, normalise, observations_batch
from stocktrade.sim.kernels import execute_target

__all__ = [
    "EnvConfig",
    "EnvData",
    "Portfolio",
    "TradingEnv",
    "action_labels",
    "advance",
    "fit_observation_spec",
]

# ---------------------------------------------------------------------------- state layout
# One float64 row per env. Numba reads these module constants as compile-time literals.
S_T = 0  # current bar index (the bar the last observation was built at)
S_CASH = 1
S_QTY = 2
S_EQUITY = 3  # cash + qty * close[t]
S_TARGET = 4  # target position in force (fraction of equity)
S_POS = 5  # position state fed to the observation: sign(qty) in {-1, 0, 1}
S_FEES = 6  # fees paid this episode
S_TRADES = 7  # fills this episode
S_PEAK = 8  # peak equity this episode
S_END = 9  # last bar index of this episode
S_STATUS = 10  # 0 running, 1 terminated (bankrupt), 2 truncated (end of range), 3 needs reset
S_START = 11
STATE_SIZE = 12

RUNNING, TERMINATED, TRUNCATED, NEEDS_RESET = 0.0, 1.0, 2.0, 3.0

# Parameter vector (float64), shared by every env of a batch.
P_COMM_BPS = 0
P_COMM_SHARE = 1
P_SLIP_BPS = 2
P_SLIP_RANGE = 3
P_WHOLE = 4
P_SHORT = 5
P_REWARD = 6  # 0 pnl, 1 log_return, 2 risk_adjusted
P_RISK = 7
P_CASH0 = 8
P_BANKRUPT = 9  # equity at or below this terminates the episode
P_BAND = 10  # a new target within this distance of the one in force is a hold
P_FILL = 11  # 0 next open, 1 close
P_POS_IDX = 12  # index of the position slot in an observation (-1: none); single env only
PARAM_SIZE = 13

# Price columns of the packed [T, 4] array.
PX_OPEN, PX_HIGH, PX_LOW, PX_CLOSE = 0, 1, 2, 3

_REWARD_CODES = {"pnl": 0.0, "log_return": 1.0, "risk_adjusted": 2.0}
# Log reward when equity is wiped out (log(0) is -inf); the episode terminates anyway.
_RUIN_REWARD = -10.0


@njit(nogil=True, error_model="numpy", inline="always")
def advance(
    st: NDArray[np.float64],
    target: float,
    px: NDArray[np.float64],
    off: int,
    p: NDArray[np.float64],
) -> float:
    """Advance one env by one bar; the accounting shared by TradingEnv and TradingVecEnv.

    Args:
        st: the env's state row (``S_*`` layout), updated in place.
        target: the target position chosen at bar ``t``; NaN keeps the one in force.
        px: packed prices ``[N, 4]`` (open, high, low, close; one cache line per bar).
        off: row of the env's bar 0 in ``px`` (0 for a single env).
        p: parameters (``P_*`` layout).

    Returns:
        The reward of the transition ``t -> t + 1``.
    """
    if st[S_STATUS] != RUNNING:
        raise ConflictError("the episode is over (or never started); call reset() first")
    t = np.int64(st[S_T])
    n = t + 1
    cash = st[S_CASH]
    qty = st[S_QTY]
    eq0 = st[S_EQUITY]
    # HOLD (NaN) and a target equal to the one in force place no order, as in the backtest.
    if target == target and abs(target - st[S_TARGET]) > p[P_BAND]:
        if p[P_FILL] == 0.0:
            fill = off + n
            price = px[fill, PX_OPEN]
        else:
            fill = off + t
            price = px[fill, PX_CLOSE]
        cash, qty, traded, fee, _ = execute_target(
            cash,
            qty,
            target,
            price,
            px[fill, PX_HIGH],
            px[fill, PX_LOW],
            p[P_COMM_BPS],
            p[P_COMM_SHARE],
            p[P_SLIP_BPS],
            p[P_SLIP_RANGE],
            p[P_WHOLE] != 0.0,
            p[P_SHORT] != 0.0,
        )
        st[S_TARGET] = target
        if traded != 0.0:
            st[S_FEES] += fee
            st[S_TRADES] += 1.0
    eq1 = cash + qty * px[off + n, PX_CLOSE]
    kind = p[P_REWARD]
    if kind == 0.0:
        reward = (eq1 - eq0) / p[P_CASH0]
    else:
        reward = math.log(eq1 / eq0) if eq1 > 0.0 and eq0 > 0.0 else _RUIN_REWARD
        if kind == 2.0:
            reward -= p[P_RISK] * reward * reward
    st[S_T] = n
    st[S_CASH] = cash
    st[S_QTY] = qty
    st[S_EQUITY] = eq1
    st[S_POS] = 1.0 if qty > 0.0 else (-1.0 if qty < 0.0 else 0.0)
    if eq1 > st[S_PEAK]:
        st[S_PEAK] = eq1
    if eq1 <= p[P_BANKRUPT]:
        st[S_STATUS] = TERMINATED
    elif n >= st[S_END]:
        st[S_STATUS] = TRUNCATED
    return reward


@njit(nogil=True, error_model="numpy")
def _step_kernel(
    sp: NDArray[np.float64],
    target: float,
    px: NDArray[np.float64],
    obs_rows: NDArray[np.float32],
    out: NDArray[np.float32],
) -> float:
    # One env's state and parameters travel in one array (``sp``): each argument of a numba
    # call costs ~65 ns of dispatch, a large share of a ~1 µs step.
    st = sp[:STATE_SIZE]
    p = sp[STATE_SIZE:]
    reward = advance(st, target, px, 0, p)
    row = np.int64(st[S_T])
    for j in range(out.shape[0]):
        out[j] = obs_rows[row, j]
    pos_idx = np.int64(p[P_POS_IDX])
    if pos_idx >= 0:
        out[pos_idx] = st[S_POS]
    return reward


@njit(nogil=True)
def reset_state(st: NDArray[np.float64], start: int, end: int, cash: float) -> None:
    """Put a state row at the start of an episode (flat, all cash)."""
    for j in range(st.shape[0]):
        st[j] = 0.0
    st[S_T] = start
    st[S_START] = start
    st[S_END] = end
    st[S_CASH] = cash
    st[S_EQUITY] = cash
    st[S_PEAK] = cash
    st[S_STATUS] = RUNNING


# ---------------------------------------------------------------------------- config


class EnvConfig(BaseModel):
    """Trading environment settings (frozen; unknown fields are errors).

    Costs and the fill rule must be the ones the policy will be backtested and traded with;
    :meth:`cost_model` gives them as the domain's :class:`CostModel`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action_mode: Literal["discrete", "target_levels", "target_box"] = "discrete"
    """``discrete``: HOLD/BUY/SELL; ``target_levels``: Discrete over ``target_levels``;
    ``target_box``: Box([-1, 1]) mapped linearly onto the target range ``[lo, hi]`` (not
    exportable to the logits/probs ONNX contract)."""
    target_levels: tuple[float, ...] = (0.0, 0.5, 1.0)
    position_size: float = Field(default=1.0, gt=0.0, le=10.0)
    """Target of BUY (SELL is minus this when shorting); also the Box bound."""
    allow_short: bool = False
    whole_shares: bool = True
    initial_cash: float = Field(default=100_000.0, gt=0.0)
    commission_bps: float = Field(default=1.0, ge=0.0)
    commission_per_share: float = Field(default=0.0, ge=0.0)
    slippage_bps: float = Field(default=2.0, ge=0.0)
    slippage_range_frac: float = Field(default=0.0, ge=0.0, le=1.0)
    fill_rule: FillRule = FillRule.NEXT_OPEN
    reward: Literal["pnl", "log_return", "risk_adjusted"] = "log_return"
    risk_aversion: float = Field(default=10.0, ge=0.0)
    episode_length: int | None = Field(default=None, ge=1)
    """Steps per episode; None runs to the end of the data range."""
    random_start: bool = False
    """Draw each episode's first bar uniformly (seeded) instead of the range start."""
    rebalance_band: float = Field(default=0.0, ge=0.0)
    """A new target within this distance of the target in force places no order."""
    bankrupt_frac: float = Field(default=0.05, ge=0.0, lt=1.0)
    """The episode terminates once equity <= this fraction of the initial cash."""

    @model_validator(mode="after")
    def _check(self) -> EnvConfig:
        CostModel(
            commission_bps=self.commission_bps,  # type: ignore[arg-type]
            commission_per_share=self.commission_per_share,  # type: ignore[arg-type]
            slippage_bps=self.slippage_bps,  # type: ignore[arg-type]
            slippage_range_frac=self.slippage_range_frac,  # type: ignore[arg-type]
        )
        if self.action_mode == "target_levels":
            levels = self.target_levels
            if len(levels) < 2 or len(set(levels)) != len(levels):
                raise ValueError(f"target_levels must hold >= 2 distinct values, found {levels}")
            limit = self.position_size
            low = -limit if self.allow_short else 0.0
            bad = [x for x in levels if not (low <= x <= limit) or not math.isfinite(x)]
            if bad:
                raise ValueError(f"target_levels must lie in [{low}, {limit}]; found {bad}")
        return self

    def cost_model(self) -> CostModel:
        """The costs as the domain's :class:`CostModel` (what the backtest is given)."""
        return CostModel(
            commission_bps=self.commission_bps,  # type: ignore[arg-type]
            commission_per_share=self.commission_per_share,  # type: ignore[arg-type]
            slippage_bps=self.slippage_bps,  # type: ignore[arg-type]
            slippage_range_frac=self.slippage_range_frac,  # type: ignore[arg-type]
        )

    @classmethod
    def with_costs(cls, costs: CostModel, **fields: Any) -> EnvConfig:
        """A config whose costs are taken from a domain :class:`CostModel`."""
        c, s, sb, sr = costs.kernel_args()
        return cls(
            commission_bps=c,
            commission_per_share=s,
            slippage_bps=sb,
            slippage_range_frac=sr,
            **fields,
        )

    def params(self) -> NDArray[np.float64]:
        """The float64 parameter vector the numba kernels read (``P_*`` layout)."""
        p = np.zeros(PARAM_SIZE, dtype=np.float64)
        p[P_COMM_BPS] = self.commission_bps
        p[P_COMM_SHARE] = self.commission_per_share
        p[P_SLIP_BPS] = self.slippage_bps
        p[P_SLIP_RANGE] = self.slippage_range_frac
        p[P_WHOLE] = float(self.whole_shares)
        p[P_SHORT] = float(self.allow_short)
        p[P_REWARD] = _REWARD_CODES[self.reward]
        p[P_RISK] = self.risk_aversion
        p[P_CASH0] = self.initial_cash
        p[P_BANKRUPT] = self.bankrupt_frac * self.initial_cash
        p[P_BAND] = self.rebalance_band
        p[P_FILL] = 0.0 if self.fill_rule is FillRule.NEXT_OPEN else 1.0
        return p

    def target_table(self) -> NDArray[np.float64]:
        """Target per discrete action (NaN = keep the target in force); empty for Box."""
        if self.action_mode == "discrete":
            table = action_target_table(allow_short=self.allow_short, size=self.position_size)
            return np.asarray(table, dtype=np.float64)
        if self.action_mode == "target_levels":
            return np.asarray(self.target_levels, dtype=np.float64)
        return np.zeros(0, dtype=np.float64)

    def action_space(self) -> spaces.Space[Any]:
        """The gymnasium action space of this config."""
        if self.action_mode == "target_box":
            # Symmetric [-1, 1] (what SB3 recommends); box_target maps it onto the bounds.
            return spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        return spaces.Discrete(len(self.target_table()))

    def box_bounds(self) -> tuple[float, float]:
        """``(low, high)`` target bounds of the Box action mode."""
        return (-self.position_size if self.allow_short else 0.0, self.position_size)

    def box_target(self, a: float) -> float:
        """Map a Box action in [-1, 1] (clipped) linearly onto ``box_bounds``."""
        low, high = self.box_bounds()
        a = min(max(a, -1.0), 1.0)
        return low + (a + 1.0) * 0.5 * (high - low)


def action_labels(config: EnvConfig) -> list[str]:
    """Human names of the discrete actions in index order (for manifests and histograms)."""
    if config.action_mode == "discrete":
        return [a.name for a in Action]
    if config.action_mode == "target_levels":
        return [f"target_{x:g}" for x in config.target_levels]
    return []


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class EnvData:
    """Everything an env needs about one symbol, precomputed.

    Attributes:
        symbol: the symbol.
        ts: bar times (``datetime64[ns]`` UTC), length ``T``.
        px: float64 ``[T, 4]``: open, high, low, close.
        obs_rows: float32 ``[T, obs_dim]``: ``observations_batch`` of every bar with
            position 0 and the bar's sentiment; a step copies a row and sets the position.
        pos_idx: index of the position slot in an observation (-1 when the spec has none).
        first: first bar an episode may start at (every window row past the warm-up).
        last: last bar an episode may reach (its final observation).
        obs_spec: the fitted observation spec.
        feature_spec: the feature spec.
    """

    symbol: str
    ts: NDArray[np.datetime64]
    px: NDArray[np.float64]
    obs_rows: NDArray[np.float32]
    pos_idx: int
    first: int
    last: int
    obs_spec: ObservationSpec
    feature_spec: FeatureSpec

    @property
    def obs_dim(self) -> int:
        """Length of one observation."""
        return int(self.obs_rows.shape[1])

    @property
    def n_bars(self) -> int:
        """Number of bars ``T`` (history included)."""
        return int(self.px.shape[0])

    @classmethod
    def from_bars(
        cls,
        bars: BarArrays,
        obs_spec: ObservationSpec,
        feature_spec: FeatureSpec | None = None,
        *,
        start: np.datetime64 | str | None = None,
        end: np.datetime64 | str | None = None,
        sentiment: NDArray[np.floating[Any]] | None = None,
    ) -> EnvData:
        """Precompute features and observations; episodes run within ``[start, end]``.

        Features use every bar in ``bars`` (history before ``start`` only warms them up),
        so pass the bars from before the range too. ``obs_spec`` must already be fitted
        (normalisation constants from the training range only, see
        :func:`fit_observation_spec`); nothing here is fitted on the data it serves.

        Args:
            bars: one symbol's bars, sorted by time.
            obs_spec: fitted observation spec.
            feature_spec: feature spec; ``FeatureSpec()`` when omitted.
            start: first decision bar time (inclusive); None = as early as warm-up allows.
            end: last bar time (inclusive) an episode may reach; None = the last bar.
            sentiment: per-bar sentiment in [-1, 1] (length T); zeros when omitted.

        Raises:
            ValidationError: the spec is not fitted, or the range leaves fewer than 2 bars.
        """
        fspec = feature_spec if feature_spec is not None else FeatureSpec()
        features = compute_features(bars.open, bars.high, bars.low, bars.close, bars.volume, fspec)
        lo = 0 if start is None else _index_at(bars.ts, start, "left")
        hi = len(bars) - 1 if end is None else _index_at(bars.ts, end, "right") - 1
        return cls.from_features(
            bars.symbol,
            bars.ts,
            np.stack([bars.open, bars.high, bars.low, bars.close], axis=1),
            features,
            obs_spec,
            fspec,
            first=lo,
            last=hi,
            sentiment=sentiment,
        )

    @classmethod
    def from_features(
        cls,
        symbol: str,
        ts: NDArray[np.datetime64],
        px: NDArray[np.float64],
        features: NDArray[np.float64],
        obs_spec: ObservationSpec,
        feature_spec: FeatureSpec,
        *,
        first: int = 0,
        last: int | None = None,
        sentiment: NDArray[np.floating[Any]] | None = None,
    ) -> EnvData:
        """Build from a precomputed feature matrix (``compute_features`` output).

        ``first`` is raised to the first bar whose whole observation window is past the
        feature warm-up; ``last`` defaults to the last bar.
        """
        prices = np.ascontiguousarray(px, dtype=np.float64)
        n_bars = prices.shape[0] if prices.ndim == 2 else -1
        if prices.ndim != 2 or prices.shape[1] != 4 or len(ts) != n_bars:
            raise ValidationError(
                f"px must be [T, 4] (open, high, low, close) with T = len(ts) = {len(ts)}; "
                f"found {prices.shape}"
            )
        norm = normalise(features, obs_spec)
        sent = np.zeros(n_bars, np.float32) if sentiment is None else np.asarray(sentiment)
        if sent.shape != (n_bars,):
            raise ValidationError(f"sentiment must have shape ({n_bars},); found {sent.shape}")
        rows = observations_batch(norm, np.arange(n_bars), 0.0, sent.astype(np.float32))
        rows.flags.writeable = False
        ready = feature_spec.warmup + obs_spec.window - 1
        lo = max(int(first), ready)
        hi = n_bars - 1 if last is None else min(int(last), n_bars - 1)
        if hi - lo < 1:
            raise ValidationError(
                f"{symbol}: an episode needs >= 2 bars after the warm-up of {ready} bars; "
                f"found bars {lo}..{hi} of {n_bars}"
            )
        pos_idx = obs_spec.window * obs_spec.n_features if obs_spec.include_position else -1
        return cls(
            symbol=symbol,
            ts=np.asarray(ts),
            px=prices,
            obs_rows=rows,
            pos_idx=pos_idx,
            first=lo,
            last=hi,
            obs_spec=obs_spec,
            feature_spec=feature_spec,
        )


def _index_at(ts: NDArray[Any], when: Any, side: Literal["left", "right"]) -> int:
    return int(np.searchsorted(ts, np.datetime64(when, "ns"), side))


def fit_observation_spec(
    bars: Sequence[BarArrays],
    spec: ObservationSpec,
    feature_spec: FeatureSpec | None = None,
    *,
    start: np.datetime64 | str | None = None,
    end: np.datetime64 | str | None = None,
) -> ObservationSpec:
    """Fit normalisation constants on the training range ``[start, end]`` of every symbol.

    Only bars inside the range (and past each feature's warm-up) contribute, so the
    constants carry no information from after ``end``.

    Raises:
        ValidationError: no bar falls in the range.
    """
    fspec = feature_spec if feature_spec is not None else FeatureSpec()
    blocks = []
    for b in bars:
        feats = compute_features(b.open, b.high, b.low, b.close, b.volume, fspec)
        window = b.between(start, end)
        if len(window) == 0:
            continue
        lo = int(np.searchsorted(b.ts, window.ts[0]))
        blocks.append(feats[lo : lo + len(window)])
    if not blocks:
        raise ValidationError(f"no bars between {start} and {end} to fit the observation spec on")
    stacked = np.concatenate(blocks)
    return spec.fit(stacked, fspec.names(), 0, stacked.shape[0])


# ---------------------------------------------------------------------------- env


@dataclass(frozen=True)
class Portfolio:
    """A snapshot of the env's account (float64; see ``sim.kernels`` for the tolerance)."""

    t: int
    cash: float
    qty: float
    equity: float
    target: float
    fees: float
    trades: int
    peak_equity: float


def _observation_space(spec: ObservationSpec) -> spaces.Box:
    k = spec.window * spec.n_features
    low = np.full(spec.obs_dim, -spec.clip, dtype=np.float32)
    high = np.full(spec.obs_dim, spec.clip, dtype=np.float32)
    # position state in {-1, 0, 1}; sentiment in [-1, 1]
    low[k:] = -1.0
    high[k:] = 1.0
    return spaces.Box(low, high, dtype=np.float32)


def draw_start(rng: np.random.Generator, data: EnvData, config: EnvConfig) -> tuple[int, int]:
    """First and last bar of a new episode (shared with the VecEnv so both draw alike)."""
    length = config.episode_length
    latest = data.last - 1 if length is None else max(data.first, data.last - length)
    start = int(rng.integers(data.first, latest + 1)) if config.random_start else data.first
    end = data.last if length is None else min(start + length, data.last)
    return start, end


class TradingEnv(gym.Env[NDArray[np.float32], Any]):
    """A single-symbol trading environment (gymnasium API).

    Args:
        data: the symbol's precomputed :class:`EnvData`.
        config: costs, action mode, reward and episode settings.

    Observation: ``float32[obs_dim]`` from :mod:`stocktrade.quant.observation` (window of
    normalised features, position state sign(qty), sentiment). Actions: ``Discrete(3)``
    HOLD/BUY/SELL by default (see :class:`EnvConfig`).

    ``reset(options={"start": i})`` starts the episode at bar ``i``. Step info is empty
    except on the last step, which carries the episode's ``equity``, ``fees`` and ``trades``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's contract

    def __init__(self, data: EnvData, config: EnvConfig | None = None) -> None:
        super().__init__()
        self.data = data
        self.config = config if config is not None else EnvConfig()
        self.observation_space = cast(
            spaces.Space[NDArray[np.float32]], _observation_space(data.obs_spec)
        )
        self.action_space = self.config.action_space()
        self._sp = np.zeros(STATE_SIZE + PARAM_SIZE, dtype=np.float64)
        self._st = self._sp[:STATE_SIZE]
        self._st[S_STATUS] = NEEDS_RESET
        self._sp[STATE_SIZE:] = self.config.params()
        self._sp[STATE_SIZE + P_POS_IDX] = data.pos_idx
        self._px = data.px
        self._rows = data.obs_rows
        self._dim = data.obs_dim
        self._is_box = self.config.action_mode == "target_box"
        self._targets: dict[int, float] = {}
        if not self._is_box:
            table = self.config.target_table()
            self._targets = {i: float(x) for i, x in enumerate(table)}

    # The hot path: one dict lookup, one allocation, one numba call.
    def step(self, action: Any) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Apply ``action`` at the current bar and advance one bar."""
        if self._is_box:
            target = self._box_target(action)
        else:
            try:
                target = self._targets[action]
            except (KeyError, TypeError):
                target = self._targets[self._discrete(action)]
        obs = np.empty(self._dim, dtype=np.float32)
        reward = _step_kernel(self._sp, target, self._px, self._rows, obs)
        status = self._st[S_STATUS]
        if status == RUNNING:
            return obs, reward, False, False, {}
        terminated = bool(status == TERMINATED)
        return obs, reward, terminated, not terminated, self._final_info()

    def _discrete(self, action: Any) -> int:
        arr = np.asarray(action)
        if arr.size == 1 and np.issubdtype(arr.dtype, np.integer):
            value = int(arr.reshape(-1)[0])
            if value in self._targets:
                return value
        raise ValidationError(f"action in 0..{len(self._targets) - 1} expected; found {action!r}")

    def _box_target(self, action: Any) -> float:
        arr = np.asarray(action, dtype=np.float64).reshape(-1)
        if arr.shape != (1,):
            raise ValidationError(f"Box action of shape (1,) expected; found {np.shape(action)}")
        return self.config.box_target(float(arr[0]))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode: flat, all cash, at the range start (or a seeded random bar)."""
        super().reset(seed=seed)
        if options and "start" in options:
            start = int(options["start"])
            if not self.data.first <= start < self.data.last:
                raise ValidationError(
                    f"start in [{self.data.first}, {self.data.last}) expected; found {start}"
                )
            length = self.config.episode_length
            end = self.data.last if length is None else min(start + length, self.data.last)
        else:
            start, end = draw_start(self.np_random, self.data, self.config)
        reset_state(self._st, start, end, self.config.initial_cash)
        obs = self._rows[start].copy()
        return obs, {"t": start}

    def _final_info(self) -> dict[str, Any]:
        st = self._st
        return {
            "equity": float(st[S_EQUITY]),
            "fees": float(st[S_FEES]),
            "trades": int(st[S_TRADES]),
            "t": int(st[S_T]),
        }

    @property
    def portfolio(self) -> Portfolio:
        """The account now (after the last step)."""
        st = self._st
        return Portfolio(
            t=int(st[S_T]),
            cash=float(st[S_CASH]),
            qty=float(st[S_QTY]),
            equity=float(st[S_EQUITY]),
            target=float(st[S_TARGET]),
            fees=float(st[S_FEES]),
            trades=int(st[S_TRADES]),
            peak_equity=float(st[S_PEAK]),
        )

    @property
    def t(self) -> int:
        """Index of the bar the current observation was built at."""
        return int(self._st[S_T])
