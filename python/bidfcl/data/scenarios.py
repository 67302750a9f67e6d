r"""Named data scenarios: documented keyword sets of :func:`~bidfcl.data.make_marketing`.

A scenario fixes the world (sizes, outcome, bias, noise) a benchmark runs on, so that results on
"biased-small-rct" mean the same thing in a config file (``[data] scenario = "..."``), on the
command line (``--scenario``) and in Python::

    from bidfcl.data import SCENARIOS, make_scenario
    data = make_scenario("biased-small-rct", seed=1)                 # MarketingData
    tiny = make_scenario("binary", n_rct=500, n_obs=2000, n_test=1000)  # overrides win

Each :class:`Scenario` records what it stresses and what was measured on it with
``benchmarks/scenario_headroom.py`` (TSM trained on RCT, on OBS and on both, scored by the true
per-capita revenue of its allocation, mean over the evaluation's 10 budget levels, on the test split):

* ``oracle_vs_tsm_rct = V_oracle / V_tsm-rct``: the headroom a better learner could still take;
* ``tsm_obs_vs_tsm_rct = V_tsm-obs / V_tsm-rct``: below 1 when the OBS log misleads a plain model;
* ``tsm_pooled_vs_tsm_rct = V_tsm-pooled / V_tsm-rct``: whether adding the biased rows helps.

The ratios are means over the seeds in ``measured_seeds``; ``None`` where not measured.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional

from .synthetic import MarketingData, make_marketing

__all__ = ["Scenario", "SCENARIOS", "get_scenario", "make_scenario", "unknown_scenario_message"]

#: the split sizes of the learning demo (and of every scenario that does not say otherwise)
DEMO_SIZES = MappingProxyType({"n_rct": 10000, "n_obs": 100000, "n_val": 10000, "n_test": 50000})


@dataclass(frozen=True)
class Scenario:
    """A named, documented set of :func:`make_marketing` keywords and what was measured on it."""

    name: str
    description: str  #: what the scenario stresses (one paragraph)
    kwargs: Mapping[str, object]  #: make_marketing keywords (read-only; no ``seed``)
    oracle_vs_tsm_rct: Optional[float] = None
    tsm_obs_vs_tsm_rct: Optional[float] = None
    tsm_pooled_vs_tsm_rct: Optional[float] = None
    measured_seeds: tuple = field(default=())

    def __post_init__(self):
        if "seed" in self.kwargs:
            raise ValueError(f"bidfcl.data: scenario {self.name!r} must not fix 'seed' (make_scenario's argument)")
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))

    def sizes(self) -> str:
        """``"RCT 2,000 / OBS 100,000 / val 1,000 / test 50,000"`` (make_marketing's defaults where unset)."""
        n_rct = self.kwargs.get("n_rct", 20000)
        n_obs = self.kwargs.get("n_obs", 10 * n_rct)
        return (
            f"RCT {n_rct:,} / OBS {n_obs:,} / val {self.kwargs.get('n_val', 20000):,} / "
            f"test {self.kwargs.get('n_test', 100000):,}"
        )


def _scenario(name: str, description: str, kwargs: dict, measured: Optional[tuple] = None) -> Scenario:
    oracle, obs, pooled, seeds = measured if measured is not None else (None, None, None, ())
    return Scenario(name, " ".join(description.split()), kwargs, oracle, obs, pooled, tuple(seeds))


#: (oracle, TSM-OBS, TSM-pooled) / TSM-RCT and the seeds: benchmarks/scenario_headroom.py --threads 1
#: (tsm-rct 150 epochs, obs / pooled 10, as in examples/decision_quality.toml; test split, mean over
#: 10 budgets); the same numbers as the TSM rows of that experiment
_MEASURED = {
    "default": (1.0249, 1.0048, 1.0074, (0, 1, 2, 3, 4)),
    "biased-small-rct": (1.1031, 1.0010, 1.0060, (0, 1, 2, 3, 4)),
    "strong-selection": (1.1031, 0.9268, 0.9626, (0, 1, 2, 3, 4)),
    "many-options": (1.0976, 1.0051, 1.0129, (0, 1, 2, 3, 4)),
    "binary": (1.0999, 1.0247, 1.0231, (0, 1, 2, 3, 4)),
    "heavy-tail": (1.1206, 0.9743, 0.9678, (0, 1, 2, 3, 4)),
}

_SMALL_RCT = {"n_rct": 2000, "n_val": 1000, "n_obs": 100000, "n_test": 50000}

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {
        s.name: s
        for s in (
            _scenario(
                "default",
                """make_marketing's defaults at the demo's sizes: 5 options, continuous revenue, mild
        feature selection and hidden confounding (selection = confounding = 1) and an RCT of 10,000
        users. The RCT alone is large enough to learn the uplift well, so there is little headroom and
        the biased rows change little: a sanity baseline, not a stress test.""",
                dict(DEMO_SIZES),
                _MEASURED["default"],
            ),
            _scenario(
                "biased-small-rct",
                """The paper's setting: a small RCT (2,000 users, 1,000 for validation) next to 100,000
        observational users logged by a targeting policy driven mostly by the hidden confounder
        (confounding = 3, u_strength = 1) that also raises baseline and uplift, with a low baseline
        (base_scale = 0.1) so the uplift dominates and noisy revenue (revenue_noise = 0.8). TSM on
        RCT is data-starved, TSM on OBS learns a confounded uplift; methods that use OBS rows without
        trusting their bias can separate.""",
                dict(_SMALL_RCT, base_scale=0.1, confounding=3.0, u_strength=1.0, revenue_noise=0.8),
                _MEASURED["biased-small-rct"],
            ),
            _scenario(
                "strong-selection",
                """Selection mostly on observables: the OBS targeting follows the marketer's linear
        responsiveness score strongly (selection = 5) with some hidden confounding (confounding = 1),
        next to the small RCT of biased-small-rct (same world, same RCT). Responsive users almost
        always got large incentives, so OBS has poor overlap: per-arm contrasts at a given x rest on
        few rows and the model extrapolates across arms, although most of the bias could in principle
        be removed by conditioning on x.""",
                dict(_SMALL_RCT, base_scale=0.1, selection=5.0, confounding=1.0, u_strength=1.0, revenue_noise=0.8),
                _MEASURED["strong-selection"],
            ),
            _scenario(
                "many-options",
                """Eight options instead of five (option 0 free, diminishing returns): a small RCT spreads its
        3,000 users over eight arms (375 per arm), the allocation must pick among finer incentive
        levels, and the OBS log is confounded as in biased-small-rct. Stresses per-arm sample size and
        the multiple-choice structure of the knapsack.""",
                dict(
                    _SMALL_RCT,
                    n_rct=3000,
                    n_options=8,
                    base_scale=0.1,
                    confounding=3.0,
                    u_strength=1.0,
                    revenue_noise=0.8,
                ),
                _MEASURED["many-options"],
            ),
            _scenario(
                "binary",
                """Conversion-like Bernoulli revenue and redemption-like Bernoulli cost (outcome = "binary",
        base conversion 5 %, uplift_scale = 0.5) with a strongly confounded OBS log (confounding = 4,
        u_strength = 1.5). Each row carries about one bit, so the RCT is larger (8,000 users) and still
        noisy; stresses learning small uplifts from 0/1 outcomes.""",
                dict(
                    n_rct=8000,
                    n_val=4000,
                    n_obs=100000,
                    n_test=50000,
                    outcome="binary",
                    uplift_scale=0.5,
                    confounding=4.0,
                    u_strength=1.5,
                ),
                _MEASURED["binary"],
            ),
            _scenario(
                "heavy-tail",
                """Heavy-tailed revenue: the observed revenue carries the mean-one Pareto factor
        (1 - xi) U^(-xi) with xi = revenue_tail = 0.35 (tail index about 2.9: finite variance,
        infinite kurtosis) on top of log-normal noise (revenue_noise = 0.5), with the small RCT of
        biased-small-rct and a more strongly confounded OBS log (confounding = 4, u_strength = 1.5).
        A few huge orders dominate squared-error losses and IPW estimates; stresses robustness of the
        prediction models and of the validation metric.""",
                dict(_SMALL_RCT, base_scale=0.1, confounding=4.0, u_strength=1.5, revenue_noise=0.5, revenue_tail=0.35),
                _MEASURED["heavy-tail"],
            ),
        )
    }
)


def unknown_scenario_message(name) -> str:
    """``"unknown scenario 'biased' (did you mean 'biased-small-rct'?); known: ..."``."""
    text = str(name)
    hint = [k for k in SCENARIOS if text and (k.startswith(text) or text.startswith(k))][:1]
    hint = hint or difflib.get_close_matches(text, list(SCENARIOS), n=1, cutoff=0.5)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown scenario {name!r}{extra}; known scenarios: {', '.join(SCENARIOS)}"


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; ``ValueError`` listing the known names (with a hint) otherwise."""
    if not isinstance(name, str) or name not in SCENARIOS:
        raise ValueError(f"bidfcl.data: {unknown_scenario_message(name)}")
    return SCENARIOS[name]


def make_scenario(name: str, seed: int = 0, **overrides) -> MarketingData:
    """``make_marketing(**{**scenario.kwargs, **overrides}, seed=seed)``: a sample of the scenario's
    world; keyword overrides (e.g. smaller sizes, another ``world_seed``) win over the scenario's."""
    kwargs = dict(get_scenario(name).kwargs)
    kwargs.update(overrides)
    return make_marketing(**kwargs, seed=seed)
