"""Calibration benchmark: do ``significant`` and the intervals keep their promises?

``python -m study.analysis simulate-calibration --studies 1000 --out results/study_stats/``

Each scenario simulates many studies from the model of
:func:`study.analysis.simulate_votes.simulate_votes` (as arrays: :func:`simulate_main_trials`),
runs the array cores that ``analyze`` runs (:func:`~study.analysis.pairwise.pair_statistics` and
:func:`~study.analysis.pairwise.finish_pairwise` behind ``pairwise_tests.csv``,
:func:`~study.analysis.bradley_terry.bt_core` behind ``bradley_terry.csv``) and records, per study, whether ``significant`` flagged
any pair (the family-wise error when no method differs), the naive Holm-corrected sign test's flag
for comparison, and whether each 95% interval covered the truth. The truth of a win rate or a BT
strength under participant and item effects is the *population-averaged* one (what the analysis
estimates: the preference share in the population of raters and images), computed by Monte Carlo
integration over the effect distributions; with no true difference it is exactly 1/2 and 0.

Per-study rows go to ``studies_<scenario>.csv`` as they are produced (chunks of 50); a rerun
skips the studies already there, so an interrupted run resumes. ``calibration.csv`` holds one row
per scenario and metric: estimate, Monte Carlo standard error, target range and whether it is met.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit

from study.analysis.bradley_terry import bt_core
from study.analysis.clustered import t_quantile
from study.analysis.pairwise import finish_pairwise, method_pairs, pair_statistics

METHODS = ["m1", "m2", "m3", "m4"]
EFFECTS = {"m1": 0.6, "m2": 0.2, "m3": 0.0, "m4": -0.8}  # sum to zero


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    strengths: dict = field(default_factory=dict)
    tie_rate: float = 0.2
    participant_sd: float = 0.0
    drift_sd: float = 0.0
    item_sd: float = 0.0
    n_participants: int = 46
    votes_per_participant: int = 40
    n_items: int = 40


SCENARIOS = {
    s.name: s for s in [
        Scenario("null_drift_items", "no true difference; rater taste, rater drift and image "
                 "effects (SD 0.5 each on the log-odds scale); 20% ties",
                 participant_sd=0.5, drift_sd=0.5, item_sd=0.5),
        Scenario("null_independent", "no true difference; independent votes; 20% ties"),
        Scenario("effects_drift_items", "true strengths 0.6/0.2/0/-0.8; rater taste, drift and "
                 "image effects (SD 0.5 each); 20% ties", strengths=EFFECTS,
                 participant_sd=0.5, drift_sd=0.5, item_sd=0.5),
        Scenario("effects_ties_independent", "true strengths 0.6/0.2/0/-0.8; independent "
                 "votes; 20% ties", strengths=EFFECTS),
    ]
}
TARGETS = {"fwer_significant": (0.03, 0.07), "coverage_win_rate": (0.93, 0.97),
           "coverage_bt_strength": (0.93, 0.97)}


def population_truth(s: Scenario, draws: int = 2_000_000, seed: int = 12345
                     ) -> tuple[dict, np.ndarray]:
    """Population-averaged P(a over b | decisive) per pair and the BT strengths they imply.

    The offsets of a decisive vote's log-odds are normal: participant and item effects of two
    methods (variance ``2 sd^2`` each) and the drift reached at the trial's place in the session
    (``2 drift_sd^2 u^2``, u uniform over the trials), so the marginal probability is
    ``E[sigmoid(theta_a - theta_b + e)]``. The BT strengths are the projection of these
    probabilities on the model with equal weight per pair (the simulated design is balanced).
    """
    theta = np.array([s.strengths.get(m, 0.0) for m in METHODS])
    rng = np.random.default_rng(seed)
    u = rng.integers(0, s.votes_per_participant, draws) / max(s.votes_per_participant - 1, 1)
    e = rng.standard_normal(draws) * np.sqrt(2 * s.participant_sd ** 2 + 2 * s.item_sd ** 2
                                             + 2 * s.drift_sd ** 2 * u ** 2)
    pairs = method_pairs(METHODS)
    index = {m: k for k, m in enumerate(METHODS)}
    prob = {}
    for a, b in pairs:
        d = theta[index[a]] - theta[index[b]]
        # antithetic pair keeps the null exactly at 1/2
        prob[(a, b)] = float(0.5 * (expit(d + e).mean() + expit(d - e).mean()))
    if not s.strengths:
        return prob, np.zeros(len(METHODS))
    i = np.array([index[a] for a, _ in pairs])
    j = np.array([index[b] for _, b in pairs])
    target = np.array([prob[p] for p in pairs])

    def loss(free: np.ndarray) -> float:
        t = np.append(free, -free.sum())
        q = expit(t[i] - t[j])
        return -float((target * np.log(q) + (1 - target) * np.log(1 - q)).sum())

    free = minimize(loss, theta[:-1], method="BFGS", options={"gtol": 1e-12}).x
    return prob, np.append(free, -free.sum())


def simulate_main_trials(s: Scenario, seed: int) -> dict[str, np.ndarray]:
    """Main trials of one study as arrays, from the model of :func:`simulate_votes`
    (rotating pairs, each item once per participant, normal rater taste, linear drift and
    image offsets per method, constant tie rate), in canonical (method_a < method_b) terms: the
    side shown is irrelevant without a position bias, so no sides are drawn."""
    rng = np.random.default_rng(seed)
    m, n_p, n_t = len(METHODS), s.n_participants, s.votes_per_participant
    theta = np.array([s.strengths.get(x, 0.0) for x in METHODS])
    taste = rng.normal(0, s.participant_sd, (n_p, m))
    drift = rng.normal(0, s.drift_sd, (n_p, m))
    image = rng.normal(0, s.item_sd, (s.n_items, m))
    pair_index = np.array([[METHODS.index(a), METHODS.index(b)] for a, b in method_pairs(METHODS)])
    person = np.repeat(np.arange(n_p), n_t)
    trial = np.tile(np.arange(n_t), n_p)
    k = (trial + person) % len(pair_index)
    passes = -(-n_t // s.n_items)
    item = rng.permuted(np.tile(np.arange(s.n_items), (n_p, passes)), axis=1)[:, :n_t].ravel()
    a, b = pair_index[k, 0], pair_index[k, 1]
    progress = trial / max(n_t - 1, 1)
    d = (theta[a] - theta[b] + taste[person, a] - taste[person, b]
         + progress * (drift[person, a] - drift[person, b]) + image[item, a] - image[item, b])
    tie = rng.random(len(d)) < s.tie_rate
    a_won = rng.random(len(d)) < expit(d)
    label = np.where(tie, 2, np.where(a_won, 0, 1))
    return {"k": k, "label": label, "participant": person, "item": item,
            "pair_index": pair_index}


def run_study(s: Scenario, seed: int, win_truth: dict, bt_truth: np.ndarray) -> dict:
    """One simulated study through the analysis' array cores (pairwise and Bradley-Terry)."""
    sim = simulate_main_trials(s, seed)
    stats = pair_statistics(sim["k"], sim["label"], sim["participant"], sim["item"],
                            len(sim["pair_index"]))
    pairwise = finish_pairwise(pd.DataFrame({
        "method_a": [a for a, _ in method_pairs(METHODS)],
        "method_b": [b for _, b in method_pairs(METHODS)], "n_votes": 0, "tie_rate": np.nan,
        **stats}), alpha=0.05)
    decisive = sim["label"] != 2
    fit = bt_core(sim["pair_index"], sim["k"][decisive], (sim["label"][decisive] == 0)
                  .astype(float), sim["participant"][decisive], sim["item"][decisive],
                  METHODS, n_draws=0)
    q = np.array([t_quantile(df) for df in fit.df])
    bt_low, bt_high = fit.theta - q * fit.se, fit.theta + q * fit.se
    truth = np.array([win_truth[p] for p in method_pairs(METHODS)])
    win_cover = (pairwise["ci_low"].to_numpy() <= truth) & (truth <= pairwise["ci_high"].to_numpy())
    naive_cover = ((pairwise["naive_ci_low"].to_numpy() <= truth)
                   & (truth <= pairwise["naive_ci_high"].to_numpy()))
    bt_cover = (bt_low <= bt_truth) & (bt_truth <= bt_high)
    return {
        "seed": seed,
        "any_significant": bool(pairwise["significant"].any()),
        "any_naive_significant": bool((pairwise["naive_p_holm"] < 0.05).any()),
        "n_significant": int(pairwise["significant"].sum()),
        "min_p_holm": float(pairwise["p_holm"].min()),
        "win_rate_covered": int(win_cover.sum()),
        "naive_win_rate_covered": int(naive_cover.sum()),
        "win_rate_intervals": int(np.isfinite(pairwise["ci_low"]).sum()),
        "bt_covered": int(bt_cover.sum()),
        "bt_intervals": int(np.isfinite(bt_low).sum()),
        "bt_error_max": float(np.abs(fit.theta - bt_truth).max()),
    }


def _rate_row(scenario: str, metric: str, hits: float, n: float, description: str) -> dict:
    estimate = hits / n if n else np.nan
    low, high = TARGETS.get(metric, (np.nan, np.nan))
    return {"scenario": scenario, "metric": metric, "estimate": estimate, "replicates": int(n),
            "mc_se": float(np.sqrt(estimate * (1 - estimate) / n)) if n else np.nan,
            "target_low": low, "target_high": high,
            "within_target": bool(low <= estimate <= high) if np.isfinite(low) else "",
            "description": description}


def summarise(s: Scenario, studies: pd.DataFrame) -> list[dict]:
    rows = []
    n = len(studies)
    if not s.strengths:
        rows.append(_rate_row(s.name, "fwer_significant", studies["any_significant"].sum(), n,
                              "share of null studies where significant flags any pair "
                              "(Holm, alpha 0.05)"))
        rows.append(_rate_row(s.name, "fwer_naive_sign_test", studies["any_naive_significant"]
                              .sum(), n, "same for the naive Holm-corrected exact sign test "
                              "(reported, not used for decisions)"))
    rows.append(_rate_row(s.name, "coverage_win_rate", studies["win_rate_covered"].sum(),
                          studies["win_rate_intervals"].sum(),
                          "95% win-rate intervals covering the population win rate"))
    rows.append(_rate_row(s.name, "coverage_naive_wilson", studies["naive_win_rate_covered"]
                          .sum(), studies["win_rate_intervals"].sum(),
                          "same for the naive Wilson interval (reported, not used)"))
    rows.append(_rate_row(s.name, "coverage_bt_strength", studies["bt_covered"].sum(),
                          studies["bt_intervals"].sum(),
                          "95% Bradley-Terry intervals covering the population strength "
                          "(4 per study, 3 independent)"))
    return rows


def simulate_calibration(out: Path, studies: int, scenarios: list[str], seed: int = 0,
                         chunk: int = 50, log=print) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    rows, truths = [], {}
    gc.disable()  # statsmodels' Holm calls gc.collect(); these loops make no cycles
    try:
        for name in scenarios:
            s = SCENARIOS[name]
            win_truth, bt_truth = truths[name] = population_truth(s)
            path = out / f"studies_{name}.csv"
            done = pd.read_csv(path) if path.exists() else pd.DataFrame()
            have = set(done["seed"]) if len(done) else set()
            todo = [seed + k for k in range(studies) if seed + k not in have]
            start = time.time()
            for at in range(0, len(todo), chunk):
                batch = [run_study(s, k, win_truth, bt_truth) for k in todo[at:at + chunk]]
                pd.DataFrame(batch).to_csv(path, mode="a", header=not path.exists(),
                                           index=False)
                log(f"{name}: {at + len(batch)}/{len(todo)} new studies "
                    f"({time.time() - start:.0f} s)")
            table = pd.read_csv(path)
            table = table[table["seed"].between(seed, seed + studies - 1)].drop_duplicates("seed")
            rows += summarise(s, table)
    finally:
        gc.enable()
    result = pd.DataFrame(rows)
    result.to_csv(out / "calibration.csv", index=False)
    settings = {name: asdict(SCENARIOS[name]) | {"studies": studies, "first_seed": seed,
                                                 "population_truth_bt": list(
                                                     truths[name][1])}
                for name in scenarios}
    (out / "calibration_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return result


def run(args: argparse.Namespace) -> int:
    names = list(SCENARIOS) if args.scenarios == "all" else [
        n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        print(f"error: unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
        return 2
    result = simulate_calibration(Path(args.out), args.studies, names, args.seed)
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(result[["scenario", "metric", "estimate", "mc_se", "replicates",
                      "within_target"]].to_string(index=False))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from study.analysis.argtypes import positive_int

    c = subparsers.add_parser("simulate-calibration", help="calibration benchmark of the tests",
                              description=__doc__.split("\n\n")[0])
    c.add_argument("--studies", type=positive_int, default=1000, help="studies per scenario")
    c.add_argument("--out", default="results/study_stats", help="output folder")
    c.add_argument("--scenarios", default="all",
                   help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    c.add_argument("--seed", type=int, default=0, help="seed of the first study")
    c.set_defaults(func=run)
