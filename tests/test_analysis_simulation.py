"""Simulation checks with known truth: test size, estimate recovery, interval coverage.

Every simulated study is seeded. Tolerances are binomial bands: with R independent replicates of
an event of probability q, the observed share has SD sqrt(q(1-q)/R); we allow 4 SD (a false alarm
rate around 1e-4 per check), so a failure means a real miscalibration, not bad luck.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import binom

from study.analysis.bootstrap import participant_weights
from study.analysis.bradley_terry import bradley_terry
from study.analysis.hallucination import hallucination_rates, mcnemar_tests
from study.analysis.pairwise import pairwise_tests
from study.analysis.quality_control import quality_control
from study.analysis.report import analyze
from study.analysis.simulate_votes import simulate_votes
from study.analysis.votes import ExclusionRule, participant_quality, validate_votes

METHODS = ["a", "b", "c", "d"]
TRUTH = {"a": 0.6, "b": 0.2, "c": 0.0, "d": -0.8}  # sum to zero: the BT identification


@pytest.fixture(autouse=True, scope="module")
def no_garbage_collection():
    """statsmodels' Holm branch calls gc.collect() on every call, and automatic collections scan
    whatever large heap earlier tests left (gradio): harmless once per analysis, dominant over
    hundreds of simulated studies. These loops create no reference cycles, so GC is paused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gc, "collect", lambda *args: 0)
        gc.disable()
        try:
            yield
        finally:
            gc.enable()


def band(q: float, replicates: int) -> float:
    return 4 * math.sqrt(q * (1 - q) / replicates)


def exact_size(n: int, alpha: float = 0.05) -> float:
    """Actual rejection probability of the two-sided exact sign test with n votes under H0."""
    c = np.arange(n // 2 + 1)
    reject = c[2 * binom.cdf(c, n, 0.5) <= alpha]
    return 0.0 if not reject.size else 2 * binom.cdf(reject[-1], n, 0.5)


def study(seed: int, strengths: dict | None, n_boot: int, **kwargs):
    votes = validate_votes(simulate_votes(METHODS, strengths, seed=seed, **kwargs))
    main = votes[votes["trial_kind"] == "main"]
    people = sorted(main["participant_id"].unique())
    weights = participant_weights(len(people), n_boot, seed)
    return main, people, weights


def test_sign_test_size_under_no_preference():
    """No true preference: each pair's exact test rejects at its exact size (<= 5%), and Holm
    keeps the family-wise error (any of 6 pairs) at or below 5%."""
    studies, rejections, any_holm = 200, 0, 0
    for seed in range(studies):
        main, people, weights = study(seed, None, 0, tie_rate=0.0, n_participants=10,
                                      votes_per_participant=30, attention_per_participant=0,
                                      repeats_per_participant=0)
        table = pairwise_tests(main, METHODS, weights, people)
        assert (table["n_votes"] == 50).all()
        rejections += int((table["p_value"] < 0.05).sum())
        any_holm += int(table["significant"].any())
    tests, size = studies * 6, exact_size(50)  # 0.0328 at n = 50
    assert abs(rejections / tests - size) < band(size, tests)
    assert rejections / tests <= 0.05
    assert any_holm / studies <= 0.05 + band(0.05, studies)


def test_mcnemar_size_under_equal_hallucination_rates():
    studies, rejections = 100, 0
    for seed in range(studies):
        main, _, _ = study(seed, None, 0, halluc_rates=dict.fromkeys(METHODS, 0.3),
                           n_participants=10, votes_per_participant=30)
        rejections += int((mcnemar_tests(main, METHODS)["p_value"] < 0.05).sum())
    assert rejections / (studies * 6) <= 0.05 + band(0.05, studies * 6)


@pytest.fixture(scope="module")
def known_truth_studies():
    """50 studies, 20 participants x 30 main votes, BT truth TRUTH, no ties, 120 bootstrap rounds."""
    out = []
    for seed in range(50):
        main, people, weights = study(1000 + seed, TRUTH, 120, tie_rate=0.0, n_participants=20,
                                      votes_per_participant=30)
        out.append((pairwise_tests(main, METHODS, weights, people),
                    bradley_terry(main, METHODS, weights, people).set_index("method")))
    return out


def test_bradley_terry_recovers_scores_and_intervals_cover(known_truth_studies):
    truth = np.array([TRUTH[m] for m in METHODS])
    estimates = np.array([bt.loc[METHODS, "score"].to_numpy() for _, bt in known_truth_studies])
    low = np.array([bt.loc[METHODS, "ci_low"].to_numpy() for _, bt in known_truth_studies])
    high = np.array([bt.loc[METHODS, "ci_high"].to_numpy() for _, bt in known_truth_studies])
    # mean over 50 studies within 0.06 of the truth (per-study SD about 0.1, so SE about 0.014)
    assert np.abs(estimates.mean(axis=0) - truth).max() < 0.06
    # the top and bottom methods are recovered in every study, the full order in most
    assert all(bt["rank"].idxmin() == "a" and bt["rank"].idxmax() == "d"
               for _, bt in known_truth_studies)
    assert np.mean([list(bt.sort_values("rank").index) == METHODS
                    for _, bt in known_truth_studies]) >= 0.75
    # participant bootstrap percentile intervals, nominal 95%: 4 per study but only 3 independent
    # (sum to zero), so the band uses 50 x 3 replicates
    coverage = ((low <= truth) & (truth <= high)).mean()
    assert 0.95 - band(0.95, 150) < coverage <= 1.0


def test_win_rate_intervals_cover_the_true_preference(known_truth_studies):
    wilson, boot, n = 0, 0, 0
    for table, _ in known_truth_studies:
        true_p = expit(table["method_a"].map(TRUTH) - table["method_b"].map(TRUTH))
        wilson += int(((table["ci_low"] <= true_p) & (true_p <= table["ci_high"])).sum())
        boot += int(((table["boot_ci_low"] <= true_p) & (true_p <= table["boot_ci_high"])).sum())
        n += len(table)
    assert abs(wilson / n - 0.95) < band(0.95, n)
    # the percentile bootstrap with only 20 clusters runs slightly narrow (about 92% here)
    assert abs(boot / n - 0.95) < band(0.95, n) + 0.02


def test_full_analysis_recovers_truth_with_ties_careless_raters_and_clustering(tmp_path):
    """A realistic study: careless raters are excluded, the target ranks first, summary signs
    are right, and hallucination rates land inside their intervals."""
    strengths = {"mobilepicasso": 0.7, "x": 0.0, "y": -0.7}
    rates = {"mobilepicasso": 0.05, "x": 0.2, "y": 0.3}
    raw = simulate_votes(list(strengths), strengths, tie_rate=0.2, halluc_rates=rates,
                         n_participants=40, votes_per_participant=45, careless_share=0.15,
                         attention_per_participant=5, participant_sd=0.3, seed=7)
    result = analyze(raw, tmp_path, n_boot=200)
    people = result.tables["participants"].set_index("participant_id")
    careless = [f"p{k:03d}" for k in range(6)]
    assert people.loc[careless, "excluded"].all()
    assert people["excluded"].sum() <= len(careless) + 4  # careful raters rarely fail
    bt = result.tables["bradley_terry"]
    assert list(bt["method"]) == ["mobilepicasso", "x", "y"]
    summary = result.tables["summary"].set_index("baseline")
    assert (summary["quality_pref"] > 0).all() and (summary["halluc_rel"] < 0).all()
    assert (summary["quality_ci_low"] <= summary["quality_pref"]).all()
    assert (summary["p_holm_preference"] < 0.05).all()
    hall = result.tables["hallucination"].set_index("method")
    for method, rate in rates.items():
        assert hall.loc[method, "ci_low"] <= rate <= hall.loc[method, "ci_high"]
    qc = result.tables["quality_control"].set_index("check")
    assert qc.loc["position_bias_left_share", "p_value"] > 0.001
    assert qc.loc["response_time_fast_share", "value"] < 0.05  # careless (fast) raters removed


def test_position_bias_is_detected():
    main, _, _ = study(3, None, 0, n_participants=20, votes_per_participant=30, left_bias=0.8)
    rates = hallucination_rates(main, METHODS)  # also checks per-appearance counts
    assert (rates["n_appearances"] == 300).all()
    qc = quality_control(main, main, participant_quality(main, ExclusionRule())).set_index("check")
    assert qc.loc["position_bias_left_share", "value"] > 0.6
    assert qc.loc["position_bias_left_share", "p_value"] < 1e-6
