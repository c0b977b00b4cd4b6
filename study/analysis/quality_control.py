"""Quality control: is the data fit to be analysed, and who was excluded and why.

One long table (``check, population, value, n, ci_low, ci_high, p_value, detail``) so that checks
with different shapes sit in one CSV. ``population`` is ``all`` (before exclusions) or ``kept``.

* Attention checks: pass rate over scorable attention trials, Wilson interval on the effective
  sample size of a participant-clustered variance; every excluded participant gets its own row
  with the reason, and the counts of participants and exclusions have their own rows.
* Test-retest: a ``repeat`` trial re-shows a participant's earlier main trial (same item and pair,
  sides swapped); it is consistent when the side-invariant label (method_a, method_b or tie) is
  the same. Participant-clustered Wilson interval. Agreement by chance is not zero: a rater who
  answered the repeat at random with the study's label shares would agree with probability
  ``sum_k p_orig,k * p_repeat,k`` (``test_retest_chance``); Cohen's kappa (statsmodels, on the
  original x repeat label table) is the agreement beyond that baseline.
* Position bias: share of decisive votes choosing the left side, tested against 1/2 with the
  two-way cluster-robust t test (a rater with a side habit makes all their votes lean the same
  way, which the naive binomial test counted as independent evidence; it stays as
  ``position_bias_naive_p``); plus the participants who chose one side in more than 85% of >= 10
  decisive votes (straight-lining).
* Response time: quantiles of answered_at - served_at and the share faster than 1.5 s.
* Inter-rater agreement: Krippendorff's alpha (nominal) on the side-invariant label, raters =
  participants, units = (item, method pair); never on left/right, whose meaning differs per rater.
  Its 95% interval is a percentile bootstrap over units (Hayes & Krippendorff 2007 resample
  units), ``--bootstrap`` rounds.
"""
from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.inter_rater import cohens_kappa

from study.analysis.clustered import TEST_NAME, clustered_mean, codes
from study.analysis.pairwise import wilson_interval
from study.analysis.votes import CANONICAL_LABELS

QC_COLUMNS = ["check", "population", "value", "n", "ci_low", "ci_high", "p_value", "detail",
              "test", "interval", "correction", "alpha", "bootstrap_rounds"]
PARTICIPANT_WILSON = "Wilson on effective n, participant-clustered variance, t quantile"
FAST_RESPONSE_S = 1.5
STRAIGHT_LINE_SHARE = 0.85
STRAIGHT_LINE_MIN_VOTES = 10


def _row(check: str, population: str, value: float, n: int = 0, ci: tuple = (np.nan, np.nan),
         p_value: float = np.nan, detail: str = "", test: str = "", interval: str = "",
         rounds: int = 0) -> list:
    return [check, population, value, n, ci[0], ci[1], p_value, detail, test, interval, "none",
            np.nan, rounds]


def _clustered_share_row(check: str, population: str, values: np.ndarray,
                         participant: np.ndarray, detail: str, item: np.ndarray | None = None,
                         null: float | None = None, test: str = "") -> list:
    """A share with the clustered Wilson interval (participant-clustered, or two-way when
    ``item`` is given) and, with ``null``, the clustered t test against it."""
    values = np.asarray(values, float)
    if item is None:  # one-way: every observation its own item
        item = np.arange(len(values))
    est = clustered_mean(values, codes(participant), codes(item), null_for_degenerate=null)
    ci = est.wilson_interval() if len(values) else (np.nan, np.nan)
    p = est.t_test(null) if null is not None and len(values) else np.nan
    interval = PARTICIPANT_WILSON if item is None or len(set(item)) == len(values) else (
        "Wilson on effective n, two-way cluster-robust variance, t quantile")
    return _row(check, population, est.mean, len(values), ci, p,
                detail + (f"; {est.note}" if est.note else ""), test, interval)


def _share_row(check: str, population: str, successes: int, n: int, detail: str,
               p_value: float = np.nan) -> list:
    low, high = wilson_interval(np.array([successes]), np.array([n]))
    return _row(check, population, successes / n if n else np.nan, n, (low[0], high[0]),
                p_value, detail)


def attention_rows(quality: pd.DataFrame) -> list[list]:
    """Pooled attention pass rate, exclusion counts and one row per excluded participant."""
    passed, trials = int(quality["attention_passed"].sum()), int(quality["attention_trials"].sum())
    per_trial = np.concatenate([np.r_[np.ones(int(k)), np.zeros(int(n - k))] for k, n in zip(
        quality["attention_passed"], quality["attention_trials"])] or [np.zeros(0)])
    owner = np.repeat(np.arange(len(quality)), quality["attention_trials"].to_numpy(int))
    rows = [_clustered_share_row("attention_pass_rate", "all", per_trial, owner,
                                 "choice == expected_choice over scorable attention trials"),
            _row("participants", "all", len(quality), len(quality)),
            _row("participants_excluded", "all", int(quality["excluded"].sum()), len(quality))]
    for _, p in quality[quality["excluded"]].iterrows():
        rows.append(_row("excluded_participant", "all", 1, int(p["n_votes"]),
                         detail=f"{p['participant_id']}: {p['reason']}"))
    return rows


def retest_pairs(votes: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(repeat trials joined to their original main trial, number of unmatched repeats)."""
    key = ["participant_id", "item_id", "method_a", "method_b"]
    originals = (votes[votes["trial_kind"] == "main"].sort_values("served_at")
                 .drop_duplicates(key)[key + ["label"]])
    repeats = votes[votes["trial_kind"] == "repeat"]
    matched = repeats.merge(originals, on=key, suffixes=("", "_original"))
    return matched, len(repeats) - len(matched)


def retest_consistency(votes: pd.DataFrame) -> tuple[int, int, int]:
    """(consistent, matched, unmatched) repeat trials; see the module docstring."""
    matched, unmatched = retest_pairs(votes)
    consistent = int((matched["label"] == matched["label_original"]).sum())
    return consistent, len(matched), unmatched


def retest_chance(matched: pd.DataFrame) -> tuple[float, float]:
    """(chance agreement ``sum_k p_orig,k p_repeat,k``, Cohen's kappa) of matched repeats."""
    if matched.empty:
        return np.nan, np.nan
    table = pd.crosstab(matched["label_original"], matched["label"]).reindex(
        index=list(CANONICAL_LABELS), columns=list(CANONICAL_LABELS), fill_value=0).to_numpy()
    n = table.sum()
    chance = float((table.sum(axis=1) / n) @ (table.sum(axis=0) / n))
    kappa = float(cohens_kappa(table, return_results=False)) if chance < 1 else np.nan
    return chance, kappa


def krippendorff_alpha(votes: pd.DataFrame) -> tuple[float, int, str]:
    """(alpha, units rated at least twice, note) on main votes; NaN when undefined."""
    units = votes.assign(unit=votes["item_id"] + "|" + votes["method_a"] + "|" + votes["method_b"])
    units = units.drop_duplicates(["participant_id", "unit"])
    shared = units.groupby("unit")["participant_id"].transform("size") >= 2
    units = units[shared]
    n_units = units["unit"].nunique()
    if n_units == 0:
        return float("nan"), 0, "no unit rated by two participants"
    if units["label"].nunique() < 2:
        return float("nan"), n_units, "every rating has the same label: alpha undefined"
    codes = units["label"].map({label: k for k, label in enumerate(CANONICAL_LABELS)})
    matrix = (units.assign(code=codes).pivot(index="participant_id", columns="unit",
                                             values="code").to_numpy(float))
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal",
                                    value_domain=list(range(len(CANONICAL_LABELS))))), n_units, (
        "nominal, labels method_a / method_b / tie, units = item x pair")


def _unit_coincidences(votes: pd.DataFrame) -> np.ndarray:
    """``(units, L, L)`` coincidence matrices of the units rated at least twice: unit u adds
    ``n_uc (n_uk - [c == k]) / (m_u - 1)`` (Krippendorff's nominal alpha is a function of their
    sum, so a bootstrap round over units is a weighted sum)."""
    units = votes.assign(unit=votes["item_id"] + "|" + votes["method_a"] + "|" + votes["method_b"])
    units = units.drop_duplicates(["participant_id", "unit"])
    counts = pd.crosstab(units["unit"], units["label"]).reindex(
        columns=list(CANONICAL_LABELS), fill_value=0).to_numpy(float)
    counts = counts[counts.sum(axis=1) >= 2]
    m = counts.sum(axis=1)
    eye = np.eye(len(CANONICAL_LABELS))
    return (counts[:, :, None] * (counts[:, None, :] - eye[None])) / (m - 1)[:, None, None]


def alpha_from_coincidences(coincidence: np.ndarray) -> np.ndarray:
    """Nominal alpha ``1 - (n - 1) D_o / sum_(c != k) n_c n_k`` for ``(..., L, L)`` matrices."""
    off = 1 - np.eye(coincidence.shape[-1])
    n_c = coincidence.sum(axis=-1)
    n = n_c.sum(axis=-1)
    observed = (coincidence * off).sum(axis=(-2, -1))
    expected = (n_c[..., :, None] * n_c[..., None, :] * off).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, 1 - (n - 1) * observed / expected, np.nan)


def krippendorff_interval(votes: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Krippendorff's alpha, resampling units with replacement
    (multinomial weights on the units' coincidence matrices, all rounds in one matrix product);
    rounds where alpha is undefined are skipped."""
    unit = _unit_coincidences(votes)
    if len(unit) < 2 or n_boot < 1:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(unit), np.full(len(unit), 1 / len(unit)), size=n_boot)
    draws = alpha_from_coincidences((weights @ unit.reshape(len(unit), -1)).reshape(
        n_boot, *unit.shape[1:]))
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def quality_control(all_votes: pd.DataFrame, kept: pd.DataFrame, quality: pd.DataFrame,
                    n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """The QC table: attention and exclusions on everyone, the other checks on kept votes."""
    rows = attention_rows(quality)

    matched, unmatched = retest_pairs(kept)
    same = (matched["label"] == matched["label_original"]).to_numpy(float)
    rows.append(_clustered_share_row(
        "test_retest_consistency", "kept", same, matched["participant_id"].to_numpy(),
        f"same label on repeat (sides swapped); {unmatched} repeats unmatched"))
    chance, kappa = retest_chance(matched)
    rows.append(_row("test_retest_chance", "kept", chance, len(matched),
                     detail="agreement expected by chance from the label shares of originals "
                            "and repeats (sum_k p_orig,k * p_repeat,k)"))
    rows.append(_row("test_retest_kappa", "kept", kappa, len(matched),
                     detail="Cohen's kappa, original x repeat labels (a / b / tie)",
                     test="Cohen's kappa (statsmodels)"))

    judged = kept[kept["trial_kind"] != "attention"]
    decisive = judged[judged["decisive"]]
    n_left, n = int(decisive["left_chosen"].sum()), len(decisive)
    p_left = float(binomtest(n_left, n, 0.5).pvalue) if n else np.nan
    rows.append(_clustered_share_row(
        "position_bias_left_share", "kept", decisive["left_chosen"].to_numpy(float),
        decisive["participant_id"].to_numpy(), "left chosen among decisive votes vs 1/2",
        item=decisive["item_id"].to_numpy(), null=0.5, test=f"left share = 1/2, {TEST_NAME}"))
    rows.append(_row("position_bias_naive_p", "kept", p_left, n, p_value=p_left,
                     detail="exact binomial test assuming independent votes (not for decisions)",
                     test="exact binomial test"))
    per_person = decisive.groupby("participant_id")["left_chosen"].agg(["mean", "size"])
    lopsided = per_person[(per_person["size"] >= STRAIGHT_LINE_MIN_VOTES)
                          & ((per_person["mean"] > STRAIGHT_LINE_SHARE)
                             | (per_person["mean"] < 1 - STRAIGHT_LINE_SHARE))]
    rows.append(_row("position_straight_liners", "kept", len(lopsided), len(per_person),
                     detail=", ".join(map(str, lopsided.index)) or "none"))

    times = kept["response_s"].dropna()
    for q in (0.1, 0.5, 0.9):
        rows.append(_row(f"response_time_s_p{int(q * 100)}", "kept",
                         float(times.quantile(q)) if len(times) else np.nan, len(times)))
    rows.append(_share_row("response_time_fast_share", "kept",
                           int((times < FAST_RESPONSE_S).sum()), len(times),
                           f"answered in under {FAST_RESPONSE_S} s"))

    main = kept[kept["trial_kind"] == "main"]
    k_alpha, n_units, note = krippendorff_alpha(main)
    k_ci = krippendorff_interval(main, n_boot, seed) if np.isfinite(k_alpha) else (np.nan, np.nan)
    rows.append(_row("krippendorff_alpha", "kept", k_alpha, n_units, k_ci, detail=note,
                     interval="percentile bootstrap over units", rounds=n_boot))
    table = pd.DataFrame(rows, columns=QC_COLUMNS)
    table["alpha"] = alpha
    return table
