"""Simulation checks with known truth: test size, estimate recovery, interval coverage.

Every simulated study is seeded. Tolerances are binomial bands: with R independent replicates of
an event of probability q, the observed share has SD sqrt(q(1-q)/R); we allow 4 SD (a false alarm
rate around 1e-4 per check), so a failure means a real miscalibration, not bad luck. These are
small versions of the committed benchmark (`python -m study.analysis simulate-calibration`,
results/study_stats/), sized to run in seconds through the same array cores.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study.analysis.calibration import (SCENARIOS, Scenario, population_truth, run_study,
                                        simulate_main_trials)
from study.analysis.pairwise import pairwise_tests
from study.analysis.report import analyze
from study.analysis.simulate_votes import simulate_votes
from study.analysis.votes import validate_votes


def band(q: float, replicates: int) -> float:
    return 4 * math.sqrt(q * (1 - q) / replicates)


def run_many(scenario: Scenario, studies: int, first_seed: int = 0) -> pd.DataFrame:
    win_truth, bt_truth = population_truth(scenario, draws=200_000)
    return pd.DataFrame([run_study(scenario, first_seed + k, win_truth, bt_truth)
                         for k in range(studies)])


STRONG_IMAGES = Scenario("strong_images", "no difference, strong image and rater effects",
                         participant_sd=0.8, drift_sd=0.5, item_sd=0.8, n_participants=30,
                         votes_per_participant=36, n_items=36)


@pytest.fixture(scope="module")
def strong_null() -> pd.DataFrame:
    return run_many(STRONG_IMAGES, 120)


def test_significant_keeps_the_family_wise_error_with_rater_and_image_effects(strong_null):
    """The old `significant` (Holm over naive sign tests) flags a pair in far more than 5% of
    null studies when raters and images differ; the clustered test stays near 5%."""
    fwer = strong_null["any_significant"].mean()
    naive = strong_null["any_naive_significant"].mean()
    assert fwer <= 0.05 + band(0.05, len(strong_null))
    assert naive > 0.2  # the defect the clustered test removes, visible at this size
    assert fwer < naive / 3


def test_clustered_intervals_cover_the_null_win_rate_and_strengths(strong_null):
    win = strong_null["win_rate_covered"].sum() / strong_null["win_rate_intervals"].sum()
    naive = strong_null["naive_win_rate_covered"].sum() / strong_null["win_rate_intervals"].sum()
    bt = strong_null["bt_covered"].sum() / strong_null["bt_intervals"].sum()
    n = int(strong_null["win_rate_intervals"].sum())
    assert abs(win - 0.95) < band(0.95, n)
    assert abs(bt - 0.95) < band(0.95, len(strong_null) * 3)  # 3 independent per study
    assert naive < 0.85  # Wilson on votes as if independent: far too narrow here


def test_bradley_terry_with_ties_covers_the_generating_strengths():
    """20% ties, independent votes: ties set aside, the BT intervals cover the generating
    strengths (half-win ties covered .707 of them)."""
    studies = run_many(SCENARIOS["effects_ties_independent"], 60, first_seed=500)
    coverage = studies["bt_covered"].sum() / studies["bt_intervals"].sum()
    assert abs(coverage - 0.95) < band(0.95, 60 * 3)
    assert studies["bt_error_max"].mean() < 0.2


def test_population_truth_is_attenuated_by_heterogeneity_and_exact_without():
    plain = population_truth(SCENARIOS["effects_ties_independent"], draws=10_000)[1]
    assert plain == pytest.approx([0.6, 0.2, 0.0, -0.8], abs=1e-9)
    attenuated = population_truth(SCENARIOS["effects_drift_items"], draws=200_000)[1]
    moved = [0, 1, 3]  # the zero strength need not stay exactly 0 in the projection
    assert (np.abs(attenuated[moved]) < np.abs(plain[moved])).all() and attenuated[0] < 0.57
    assert attenuated.sum() == pytest.approx(0, abs=1e-9)


def test_array_simulator_matches_the_votes_simulator_design():
    """The benchmark's array generator and simulate_votes share the design: rotating pairs, each
    item once per participant."""
    s = SCENARIOS["null_drift_items"]
    sim = simulate_main_trials(s, 0)
    cells = pd.DataFrame({"p": sim["participant"], "i": sim["item"]})
    assert not cells.duplicated().any() and len(cells) == s.n_participants * s.votes_per_participant
    assert np.bincount(sim["k"]).min() >= len(sim["k"]) // 6 - s.n_participants
    votes = validate_votes(simulate_votes(["a", "b", "c", "d"], n_participants=5,
                                          votes_per_participant=40, n_items=40, seed=1))
    main = votes[votes["trial_kind"] == "main"]
    assert not main.duplicated(["participant_id", "item_id"]).any()


def test_full_analysis_recovers_truth_with_ties_careless_raters_and_clustering(tmp_path):
    """A realistic study: careless raters are excluded, the target ranks first, summary signs
    are right, and hallucination rates land inside their intervals."""
    strengths = {"mobilepicasso": 0.7, "x": 0.0, "y": -0.7}
    rates = {"mobilepicasso": 0.05, "x": 0.2, "y": 0.3}
    raw = simulate_votes(list(strengths), strengths, tie_rate=0.2, halluc_rates=rates,
                         n_participants=40, votes_per_participant=45, n_items=45, careless_share=0.15,
                         attention_per_participant=5, participant_sd=0.3, item_sd=0.3, seed=7)
    result = analyze(raw, tmp_path, n_boot=100)
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
    votes = validate_votes(simulate_votes(["a", "b", "c", "d"], n_participants=20,
                                          votes_per_participant=30, left_bias=0.8, seed=3))
    from study.analysis.quality_control import quality_control
    from study.analysis.votes import ExclusionRule, participant_quality

    main = votes[votes["trial_kind"] == "main"]
    qc = quality_control(main, main, participant_quality(main, ExclusionRule()),
                         n_boot=10).set_index("check")
    assert qc.loc["position_bias_left_share", "value"] > 0.6
    assert qc.loc["position_bias_left_share", "p_value"] < 1e-4


def test_pairwise_through_the_table_equals_the_array_core():
    raw = simulate_votes(["a", "b", "c"], {"a": 0.4}, n_participants=12, votes_per_participant=24,
                         item_sd=0.4, seed=11)
    votes = validate_votes(raw)
    table = pairwise_tests(votes[votes["trial_kind"] == "main"], ["a", "b", "c"])
    assert np.isfinite(table["p_value"]).all() and (table["design_effect"] >= 1).all()
    assert ((table["ci_low"] <= table["win_rate_a"]) & (table["win_rate_a"] <= table["ci_high"])).all()
