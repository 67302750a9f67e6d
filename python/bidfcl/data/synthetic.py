r"""A marketing simulator with ground truth: RCT and biased observational (OBS) samples.

Learning for decisions can only be judged where the truth is known. :func:`make_marketing` draws
users from one fixed "world" (coefficients from ``world_seed``), gives every user the expected
revenue ``r[i, j]`` and cost ``c[i, j]`` of every option j, and logs one option per user either at
random (RCT) or by a biased targeting policy (OBS). :class:`MarketingData` carries the truth, so any
policy's expected per-capita revenue and cost (:meth:`MarketingData.true_value`) and the best policy
under a budget (:meth:`MarketingData.oracle`, via :func:`bidfcl.solve_mckp`) are exact.

Generating equations (F features, M options, j = 0..M-1; ``sigmoid``, ``softplus`` elementwise)
------------------------------------------------------------------------------------------------
World (drawn once from ``world_seed``): unit vectors ``w_b, w_c, w_k, v_1..v_H`` in R^F (H = 4),
signs/weights ``a_1..a_H``. Per user (``seed``)::

    x ~ N(0, I_F)                       observed features
    u ~ N(0, 1)                         hidden confounder, independent of x, never returned as a feature
    g_u = u_strength * u  if hidden_confounder else 0
    z_b = x.w_b,  z_c = x.w_c,  z_k = x.w_k                    (each N(0, 1))
    h(x) = (1/sqrt H) sum_k a_k sin(1.5 x.v_k) + 0.5 x_0 x_1 + 0.5 (|x_2| - 0.8)   (nonlinear)
    eta  = h(x) + 0.5 z_b + g_u                                 uplift index (responsiveness)
    k    = 0.7 exp(0.5 tanh(z_k))                              user-specific saturation rate
    g_j  = (1 - exp(-k j)) / (1 - exp(-k (M-1)))                diminishing returns: g_0 = 0, g_{M-1} = 1
    d_j  = (j / (M-1)) ** cost_power                            cost profile: d_0 = 0 (option 0 is free)

``outcome="continuous"`` (order-value-like revenue, coupon-spend-like cost)::

    r[i,j] = base_scale exp(0.4 z_b + 0.3 g_u) + uplift_scale softplus(eta) g_j
    c[i,j] = cost_scale exp(0.3 z_c + 0.3 tanh(eta)) d_j
    revenue = r[i,t] exp(revenue_noise e1 - revenue_noise^2 / 2) L    (log-normal, mean r)
    cost    = c[i,t] exp(cost_noise e2 - cost_noise^2 / 2)            e1, e2 ~ N(0, 1)
    L = (1 - xi) U^(-xi),  xi = revenue_tail in [0, 1/2),  U ~ Uniform(0, 1]  (L = 1 when xi = 0)

``L`` is a heavy-tailed, mean-one multiplicative factor: ``U^(-xi)`` is Pareto with tail index
``1/xi`` (P(U^(-xi) > y) = y^(-1/xi) for y >= 1) and mean ``1/(1 - xi)``, so ``E[L] = 1`` and
``Var L = xi^2 / (1 - 2 xi)`` (finite for xi < 1/2; the fourth moment is finite only for xi < 1/4).
U comes from its own random stream and is drawn only when xi > 0, so ``revenue_tail = 0`` gives
exactly the samples of the log-normal model.

``outcome="binary"`` (conversion-like revenue, redemption/visit-like cost)::

    p0     = sigmoid(logit(base_scale) + 0.5 z_b + 0.5 g_u)           base conversion rate
    r[i,j] = p0 + (1 - p0) uplift_scale sigmoid(eta - 1) g_j           in [0, 1]
    c[i,j] = sigmoid(logit(cost_scale) + 0.5 z_c + 0.5 tanh(eta)) d_j  in [0, 1]
    revenue ~ Bernoulli(r[i,t]),  cost ~ Bernoulli(c[i,t])

Logged options::

    RCT:  t ~ Categorical(propensity)       (uniform 1/M by default); propensity[t] is returned
    OBS:  a marketer's linear score of responsiveness, z_t = x.w_t with w_t the unit vector of the
          first-order part of eta (so z_t ~ N(0,1) and correlates with eta), and
          m = selection * z_t + confounding * u,     s = m + e,   e ~ N(0, 1),
          t = number of thresholds tau_1 < ... < tau_{M-1} below s,
          tau_j = sd(s) * Phi^{-1}(q_1 + ... + q_j),  sd(s) = sqrt(selection^2 + confounding^2 + 1)
    so users whose noisy score says "responsive" get larger incentives and arm j receives a share
    q_j (``obs_arm_shares``, uniform by default) of users. With ``selection = confounding = 0`` the
    OBS log is a uniform RCT. The logging probability of the logged arm,
    P(t | x, u) = Phi(tau_{t+1} - m) - Phi(tau_t - m), depends on the hidden u; it is returned as
    :attr:`MarketingData.obs_propensity` (ground truth), not as ``obs.propensity``.

Confounding: when ``hidden_confounder`` is on, u raises both the baseline and the uplift, and
``confounding`` sends high-u users to large options, so naive per-arm means on OBS are biased in a
way no model of x can undo; ``selection`` biases them through features (fixable by conditioning on x).

Defaults (a meaningful but learnable problem): 12 features, 5 options, continuous outcome with
``base_scale=1, uplift_scale=0.6, cost_scale=1`` (the top option lifts expected revenue by about
0.55 on a baseline of about 1.1 and costs about 1.05 per capita), ``revenue_noise=0.5`` and
``cost_noise=0.3``, ``confounding = selection = 1``; binary defaults ``base_scale=0.05,
uplift_scale=0.3, cost_scale=0.3``. Sizes RCT : OBS = 1 : 10.

Determinism and scale: samples come from ``numpy.random.Generator`` streams keyed by
``(seed, split, chunk)`` with a fixed chunk size (no global RNG), so a split does not change when
another split's size changes, and results do not depend on thread count. Rows are generated in
chunks into preallocated outputs (peak memory ~ output + a few chunk-sized temporaries).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from .._ops import MAX_OPTIONS
from ..budgets import BudgetUnit, convert
from ..solver import solve_mckp
from .dataset import DataError, UpliftDataset

__all__ = ["make_marketing", "MarketingData", "MarketingWorld", "OraclePolicy", "SPLITS"]

SPLITS = ("rct", "obs", "val", "test")
_SPLIT_CODE = {"rct": 1, "obs": 2, "val": 3, "test": 4}
_CHUNK_ROWS = 1 << 17  # fixed: the random streams are keyed by chunk index, so never change per call
_N_WAVES = 4
_TAIL_STREAM = 0x7A11  # extra key of the heavy-tail factor's random stream


class OraclePolicy(NamedTuple):
    """The best policy under a budget from the true r, c (:meth:`MarketingData.oracle`)."""

    choice: torch.Tensor  #: int64 [N] (or [K, N] for K budgets)
    value: torch.Tensor  #: float64 per-capita expected revenue of ``choice``
    cost: torch.Tensor  #: float64 per-capita expected cost of ``choice``
    lam: torch.Tensor  #: the multiplier lam* of the exact solve


@dataclass(frozen=True)
class MarketingWorld:
    """The fixed coefficients of the ground truth (drawn from ``world_seed``); see the module doc."""

    n_features: int
    n_options: int
    outcome: str
    w_base: np.ndarray  # [F] unit
    w_cost: np.ndarray  # [F] unit
    w_sat: np.ndarray  # [F] unit
    w_target: np.ndarray  # [F] unit: the OBS marketer's linear responsiveness score
    proj: np.ndarray  # [F, H] unit columns
    amp: np.ndarray  # [H]
    base_scale: float
    uplift_scale: float
    cost_scale: float
    cost_power: float
    u_strength: float
    hidden_confounder: bool

    @staticmethod
    def draw(
        n_features: int,
        n_options: int,
        outcome: str,
        world_seed: int,
        *,
        base_scale: float,
        uplift_scale: float,
        cost_scale: float,
        cost_power: float,
        u_strength: float,
        hidden_confounder: bool,
    ) -> "MarketingWorld":
        rng = np.random.default_rng([int(world_seed), 0x5EED])
        f, h = n_features, _N_WAVES

        def unit(v):
            return v / np.linalg.norm(v, axis=0, keepdims=True)

        w_base, w_cost, w_sat = (unit(rng.standard_normal(f)) for _ in range(3))
        proj = unit(rng.standard_normal((f, h)))
        amp = rng.uniform(0.6, 1.2, size=h) * rng.choice([-1.0, 1.0], size=h)
        # first-order (linear) part of eta = sum_k a_k 1.5 x.v_k / sqrt(H) + 0.5 x.w_b: what a
        # marketer's linear model of responsiveness would find
        w_target = unit(proj @ (amp * 1.5 / math.sqrt(h)) + 0.5 * w_base)
        return MarketingWorld(
            f,
            n_options,
            outcome,
            w_base,
            w_cost,
            w_sat,
            w_target,
            proj,
            amp,
            float(base_scale),
            float(uplift_scale),
            float(cost_scale),
            float(cost_power),
            float(u_strength),
            bool(hidden_confounder),
        )

    def truth(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected revenue and cost ``[n, M]`` for features ``x`` ``[n, F]`` and hidden ``u`` ``[n]``."""
        dt = x.dtype
        m = self.n_options
        t = lambda a: torch.as_tensor(a, dtype=dt)  # noqa: E731
        g_u = u * self.u_strength if self.hidden_confounder else torch.zeros_like(u)
        z_b, z_c, z_k = x @ t(self.w_base), x @ t(self.w_cost), x @ t(self.w_sat)
        waves = torch.sin(1.5 * (x @ t(self.proj))) @ t(self.amp) / math.sqrt(_N_WAVES)
        h = waves + 0.5 * x[:, 0] * x[:, 1] + 0.5 * (x[:, 2].abs() - 0.8)
        eta = h + 0.5 * z_b + g_u
        k = (0.7 * torch.exp(0.5 * torch.tanh(z_k))).unsqueeze(1)
        j = torch.arange(m, dtype=dt)
        if m > 1:
            g = (1 - torch.exp(-k * j)) / (1 - torch.exp(-k * (m - 1)))
            d = (j / (m - 1)) ** self.cost_power
        else:
            g = torch.zeros(x.shape[0], 1, dtype=dt)
            d = torch.zeros(1, dtype=dt)
        if self.outcome == "continuous":
            base = self.base_scale * torch.exp(0.4 * z_b + 0.3 * g_u)
            amp = self.uplift_scale * torch.nn.functional.softplus(eta)
            r = base.unsqueeze(1) + amp.unsqueeze(1) * g
            scale = self.cost_scale * torch.exp(0.3 * z_c + 0.3 * torch.tanh(eta))
        else:
            p0 = torch.sigmoid(_logit(self.base_scale) + 0.5 * z_b + 0.5 * g_u)
            amp = self.uplift_scale * torch.sigmoid(eta - 1)
            r = p0.unsqueeze(1) + ((1 - p0) * amp).unsqueeze(1) * g
            scale = torch.sigmoid(_logit(self.cost_scale) + 0.5 * z_c + 0.5 * torch.tanh(eta))
        c = scale.unsqueeze(1) * d
        return r, c

    def targeting_score(self, x: torch.Tensor) -> torch.Tensor:
        """The OBS marketer's linear responsiveness score ``z_t = x.w_t`` (standard normal)."""
        return x @ torch.as_tensor(self.w_target, dtype=x.dtype)


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"bidfcl.data: binary outcome expects base_scale and cost_scale in (0, 1), got {p}")
    return math.log(p / (1 - p))


@dataclass
class MarketingData:
    """Synthetic splits with ground truth. ``rct``/``val``/``test`` are randomised, ``obs`` is logged
    by the biased targeting policy. Each split is an :class:`UpliftDataset` whose ``r_true``/``c_true``
    hold the expected revenue/cost of every option."""

    rct: UpliftDataset
    obs: UpliftDataset
    val: UpliftDataset
    test: UpliftDataset
    world: MarketingWorld
    obs_propensity: torch.Tensor  #: true P(logged option | x, u) of the OBS rows (depends on hidden u)
    config: dict = field(default_factory=dict)

    @property
    def n_options(self) -> int:
        return self.world.n_options

    @property
    def n_features(self) -> int:
        return self.world.n_features

    def split(self, name: str) -> UpliftDataset:
        if name not in SPLITS:
            raise ValueError(f"bidfcl.data: split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def true_value(self, choice: torch.Tensor, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-capita expected revenue and cost of a policy on a split (exact, from r_true/c_true):

            V = (1/N) sum_i r_true[i, choice_i],   C = (1/N) sum_i c_true[i, choice_i]

        ``choice`` is int64 ``[N]`` or ``[K, N]`` (K policies); returns float64 scalars or ``[K]``.
        """
        ds = self.split(split)
        choice = torch.as_tensor(choice).to(device=ds.r_true.device)
        if choice.dtype != torch.int64:
            raise DataError(f"bidfcl.data: expected choice of dtype int64, got {choice.dtype}")
        n = len(ds)
        if choice.shape[-1] != n or choice.dim() not in (1, 2):
            raise DataError(
                f"bidfcl.data: expected choice of shape [N={n}] or [K, N={n}] for split "
                f"{split!r}, got {list(choice.shape)}"
            )
        if choice.numel() and (int(choice.min()) < 0 or int(choice.max()) >= self.n_options):
            raise DataError(
                f"bidfcl.data: expected choice in [0, {self.n_options}), got values in "
                f"[{int(choice.min())}, {int(choice.max())}]"
            )
        squeeze = choice.dim() == 1
        ch = choice.reshape(-1, n)
        vals, costs = [], []
        for row in ch:
            idx = row.unsqueeze(1)
            vals.append(
                ds.r_true.gather(1, idx).to(torch.float64).mean() if n else torch.zeros((), dtype=torch.float64)
            )
            costs.append(
                ds.c_true.gather(1, idx).to(torch.float64).mean() if n else torch.zeros((), dtype=torch.float64)
            )
        v, c = torch.stack(vals), torch.stack(costs)
        return (v[0], c[0]) if squeeze else (v, c)

    def oracle(self, budget_per_capita, split: str = "test") -> OraclePolicy:
        """The best policy under ``budget_per_capita`` (a number or ``[K]``) on a split, from the true r, c.

        Solves ``max sum_i r_true[i, z_i]  s.t.  sum_i c_true[i, z_i] <= budget_per_capita * N``
        exactly with :func:`bidfcl.solve_mckp`; value and cost are returned per capita.
        """
        ds = self.split(split)
        n = len(ds)
        if isinstance(budget_per_capita, (list, tuple)):  # solve_mckp takes a number or a tensor
            budget_per_capita = torch.tensor(budget_per_capita, dtype=torch.float64)
        budget_total = convert(
            budget_per_capita, BudgetUnit.PER_CAPITA, BudgetUnit.TOTAL, n_rows=n, name="budget_per_capita"
        )
        sol = solve_mckp(ds.r_true, ds.c_true, budget_total)
        return OraclePolicy(sol.choice, sol.value / max(n, 1), sol.spend / max(n, 1), sol.lam)

    def max_spend_per_capita(self, split: str = "test") -> float:
        """Expected per-capita cost of giving everyone the most expensive option (a budget scale)."""
        ds = self.split(split)
        return float(ds.c_true.max(dim=1).values.to(torch.float64).mean())


def _check_size(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"bidfcl.data: expected {name} to be a non-negative int, got {v!r}")
    return int(v)


def _probabilities(p, m: int, name: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64).reshape(-1)
    if arr.shape[0] != m or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"bidfcl.data: expected {name} to be {m} positive probabilities (one per option), got {p!r}")
    if abs(arr.sum() - 1.0) > 1e-6:
        raise ValueError(f"bidfcl.data: expected {name} to sum to 1, got sum {arr.sum():.6g}")
    return arr


def make_marketing(
    n_rct: int = 20_000,
    n_obs: Optional[int] = None,
    n_val: int = 20_000,
    n_test: int = 100_000,
    n_features: int = 12,
    n_options: int = 5,
    outcome: str = "continuous",
    confounding: float = 1.0,
    selection: float = 1.0,
    hidden_confounder: bool = True,
    propensity: Optional[Sequence[float]] = None,
    obs_arm_shares: Optional[Sequence[float]] = None,
    seed: int = 0,
    world_seed: int = 0,
    dtype: torch.dtype = torch.float32,
    *,
    base_scale: Optional[float] = None,
    uplift_scale: Optional[float] = None,
    cost_scale: Optional[float] = None,
    cost_power: float = 1.25,
    u_strength: float = 0.7,
    revenue_noise: float = 0.5,
    cost_noise: float = 0.3,
    revenue_tail: float = 0.0,
    num_threads: Optional[int] = None,
) -> MarketingData:
    """Synthetic marketing data with ground truth: RCT, OBS, validation and test splits.

    See the module docstring for the generating equations. Arguments:

    Args:
        n_rct, n_obs, n_val, n_test: rows per split; ``n_obs`` defaults to ``10 * n_rct``.
            ``val`` and ``test`` are randomised like ``rct``.
        n_features: F >= 3 observed features. n_options: M >= 2 options, option 0 is free.
        outcome: ``"continuous"`` (log-normal noise around r, c) or ``"binary"`` (Bernoulli).
        confounding: weight of the hidden u in the OBS targeting score (>= 0).
        selection: weight of the features' responsiveness score in the OBS targeting (>= 0).
        hidden_confounder: whether u shifts the outcomes (baseline and uplift) at all.
        propensity: RCT/val/test arm probabilities ``[M]`` (default uniform).
        obs_arm_shares: OBS share of users per option ``[M]`` (default uniform).
        seed: the sample; world_seed: the ground-truth coefficients (same world, new users by seed).
        dtype: float32 or float64 for every float output (the truth is computed in this dtype).
        base_scale, uplift_scale, cost_scale: level of baseline, uplift and cost (see the equations;
            defaults 1 / 0.6 / 1 continuous, 0.05 / 0.3 / 0.3 binary, where they are rates).
        cost_power: curvature of cost in the option index; u_strength: effect of u on the outcomes.
        revenue_noise, cost_noise: log-normal noise levels (continuous outcome only).
        revenue_tail: xi in [0, 0.5), the heavy-tailed factor ``L = (1 - xi) U^(-xi)`` on the observed
            revenue (continuous outcome only; 0 = none, tail index 1/xi otherwise).
        num_threads: threads generating chunks in parallel (default: ``torch.get_num_threads()``);
            the result does not depend on it.

    Returns:
        :class:`MarketingData`; ``rct``/``val``/``test`` carry the design propensity per row,
        ``obs.propensity`` is None (the true logging probability is ``obs_propensity``).
    """
    n_rct = _check_size("n_rct", n_rct)
    n_obs = 10 * n_rct if n_obs is None else _check_size("n_obs", n_obs)
    n_val, n_test = _check_size("n_val", n_val), _check_size("n_test", n_test)
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 3:
        raise ValueError(f"bidfcl.data: expected n_features >= 3 (the truth uses x_0, x_1, x_2), got {n_features!r}")
    if isinstance(n_options, bool) or not isinstance(n_options, int) or not 2 <= n_options <= MAX_OPTIONS:
        raise ValueError(
            f"bidfcl.data: expected n_options in [2, {MAX_OPTIONS}] (bidfcl.MAX_OPTIONS, the compiled "
            f"core's limit), got {n_options!r}"
        )
    if outcome not in ("continuous", "binary"):
        raise ValueError(f"bidfcl.data: outcome must be 'continuous' or 'binary', got {outcome!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"bidfcl.data: dtype must be torch.float32 or torch.float64, got {dtype}")
    for name, v in (
        ("confounding", confounding),
        ("selection", selection),
        ("revenue_noise", revenue_noise),
        ("cost_noise", cost_noise),
        ("u_strength", u_strength),
        ("cost_power", cost_power),
    ):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"bidfcl.data: expected {name} to be a finite number >= 0, got {v!r}")
    if isinstance(revenue_tail, bool) or not isinstance(revenue_tail, (int, float)) or not (0.0 <= revenue_tail < 0.5):
        raise ValueError(
            f"bidfcl.data: expected revenue_tail to be a number in [0, 0.5) (the Pareto factor's "
            f"1 / tail index; its variance is infinite from 0.5 on), got {revenue_tail!r}"
        )
    if revenue_tail > 0 and outcome != "continuous":
        raise ValueError(
            f"bidfcl.data: revenue_tail applies to outcome='continuous' only (binary revenue is "
            f"Bernoulli), got revenue_tail={revenue_tail!r} with outcome={outcome!r}"
        )
    m = n_options
    defaults = {"continuous": (1.0, 0.6, 1.0), "binary": (0.05, 0.3, 0.3)}[outcome]
    base_scale = defaults[0] if base_scale is None else float(base_scale)
    uplift_scale = defaults[1] if uplift_scale is None else float(uplift_scale)
    cost_scale = defaults[2] if cost_scale is None else float(cost_scale)
    if outcome == "binary":
        _logit(base_scale), _logit(cost_scale)
        if not 0 <= uplift_scale <= 1:
            raise ValueError(f"bidfcl.data: binary outcome expects uplift_scale in [0, 1], got {uplift_scale}")
    rct_p = _probabilities(np.full(m, 1.0 / m) if propensity is None else propensity, m, "propensity")
    obs_q = _probabilities(np.full(m, 1.0 / m) if obs_arm_shares is None else obs_arm_shares, m, "obs_arm_shares")

    world = MarketingWorld.draw(
        n_features,
        m,
        outcome,
        world_seed,
        base_scale=base_scale,
        uplift_scale=uplift_scale,
        cost_scale=cost_scale,
        cost_power=cost_power,
        u_strength=u_strength,
        hidden_confounder=hidden_confounder,
    )
    gen = _Generator(
        world,
        dtype,
        seed,
        rct_p,
        obs_q,
        float(confounding),
        float(selection),
        float(revenue_noise),
        float(cost_noise),
        float(revenue_tail),
        num_threads,
    )
    rct, _ = gen.split("rct", n_rct)
    obs, obs_prop = gen.split("obs", n_obs)
    val, _ = gen.split("val", n_val)
    test, _ = gen.split("test", n_test)
    config = dict(
        n_rct=n_rct,
        n_obs=n_obs,
        n_val=n_val,
        n_test=n_test,
        n_features=n_features,
        n_options=m,
        outcome=outcome,
        confounding=float(confounding),
        selection=float(selection),
        hidden_confounder=bool(hidden_confounder),
        propensity=rct_p.tolist(),
        obs_arm_shares=obs_q.tolist(),
        seed=seed,
        world_seed=world_seed,
        dtype=str(dtype),
        base_scale=base_scale,
        uplift_scale=uplift_scale,
        cost_scale=cost_scale,
        cost_power=cost_power,
        u_strength=u_strength,
        revenue_noise=revenue_noise,
        cost_noise=cost_noise,
        revenue_tail=float(revenue_tail),
    )
    return MarketingData(rct, obs, val, test, world, obs_prop, config)


class _Generator:
    """Fills preallocated split tensors chunk by chunk (each chunk its own random stream)."""

    def __init__(
        self,
        world,
        dtype,
        seed,
        rct_p,
        obs_q,
        confounding,
        selection,
        revenue_noise,
        cost_noise,
        revenue_tail,
        num_threads,
    ):
        self.world, self.dtype, self.seed = world, dtype, int(seed)
        self.rct_p, self.rct_cum = rct_p, np.cumsum(rct_p)[:-1]
        self.confounding, self.selection = confounding, selection
        self.revenue_noise, self.cost_noise, self.revenue_tail = revenue_noise, cost_noise, revenue_tail
        self.num_threads = max(1, int(num_threads if num_threads is not None else torch.get_num_threads()))
        sd = math.sqrt(selection**2 + confounding**2 + 1.0)
        self.obs_sd = sd
        cum = torch.tensor(np.clip(np.cumsum(obs_q)[:-1], 1e-12, 1 - 1e-12), dtype=torch.float64)
        self.obs_tau = (sd * torch.special.ndtri(cum)).to(dtype)  # [M-1] thresholds on the noisy score

    def split(self, name: str, n: int) -> tuple[UpliftDataset, Optional[torch.Tensor]]:
        f, m, dt = self.world.n_features, self.world.n_options, self.dtype
        out = dict(
            x=torch.empty(n, f, dtype=dt),
            treatment=torch.empty(n, dtype=torch.int64),
            revenue=torch.empty(n, dtype=dt),
            cost=torch.empty(n, dtype=dt),
            propensity=torch.empty(n, dtype=dt),
            r_true=torch.empty(n, m, dtype=dt),
            c_true=torch.empty(n, m, dtype=dt),
        )
        starts = list(range(0, n, _CHUNK_ROWS))
        work = [(name, i, s, min(s + _CHUNK_ROWS, n), out) for i, s in enumerate(starts)]
        # one torch thread per chunk (small ops; intra-op threads only add overhead and spin under
        # contention); chunks run in parallel instead: numpy's generators and torch's kernels
        # release the GIL and each chunk writes its own rows
        with _torch_threads(1):
            if self.num_threads > 1 and len(work) > 1:
                with ThreadPoolExecutor(self.num_threads) as pool:
                    list(pool.map(lambda a: self._chunk(*a), work))
            else:
                for a in work:
                    self._chunk(*a)
        prop = out.pop("propensity")
        if name == "obs":
            ds = UpliftDataset(**out, propensity=None, n_options=m)
            return ds, prop
        return UpliftDataset(**out, propensity=prop, n_options=m), None

    def _chunk(self, name: str, index: int, lo: int, hi: int, out: dict) -> None:
        n, f, dt = hi - lo, self.world.n_features, self.dtype
        npdt = np.float32 if dt == torch.float32 else np.float64
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[name], index])
        x = torch.from_numpy(rng.standard_normal((n, f), dtype=npdt))
        u = torch.from_numpy(rng.standard_normal(n, dtype=npdt))
        r, c = self.world.truth(x, u)
        if name == "obs":
            mean = self.selection * self.world.targeting_score(x) + self.confounding * u
            s = mean + torch.from_numpy(rng.standard_normal(n, dtype=npdt))
            t = torch.searchsorted(self.obs_tau, s.unsqueeze(1)).squeeze(1)
            inf = torch.tensor([math.inf], dtype=dt)
            edges = torch.cat([-inf, self.obs_tau, inf])
            prop = torch.special.ndtr(edges[t + 1] - mean) - torch.special.ndtr(edges[t] - mean)
        else:
            t = torch.from_numpy(np.searchsorted(self.rct_cum, rng.random(n), side="right").astype(np.int64))
            prop = torch.from_numpy(self.rct_p.astype(npdt))[t]
        r_t = r.gather(1, t.unsqueeze(1)).squeeze(1)
        c_t = c.gather(1, t.unsqueeze(1)).squeeze(1)
        if self.world.outcome == "continuous":
            e = torch.from_numpy(rng.standard_normal((2, n), dtype=npdt))
            sr, sc = self.revenue_noise, self.cost_noise
            revenue = r_t * torch.exp(sr * e[0] - 0.5 * sr * sr)
            cost = c_t * torch.exp(sc * e[1] - 0.5 * sc * sc)
            if self.revenue_tail > 0:  # its own stream: the draws above are those of revenue_tail = 0
                xi = self.revenue_tail
                tail = np.random.default_rng([self.seed, _SPLIT_CODE[name], index, _TAIL_STREAM])
                u_tail = 1.0 - tail.random(n)  # in (0, 1]
                revenue = revenue * torch.from_numpy(((1.0 - xi) * u_tail ** (-xi)).astype(npdt))
        else:
            v = torch.from_numpy(rng.random((2, n), dtype=npdt))
            revenue = (v[0] < r_t).to(dt)
            cost = (v[1] < c_t).to(dt)
        sl = slice(lo, hi)
        out["x"][sl] = x
        out["treatment"][sl] = t
        out["revenue"][sl] = revenue
        out["cost"][sl] = cost
        out["propensity"][sl] = prop
        out["r_true"][sl] = r
        out["c_true"][sl] = c


class _torch_threads:
    """Temporarily set torch's intra-op threads (chunks run in parallel instead)."""

    def __init__(self, n: int):
        self.n, self.old = n, None

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)
