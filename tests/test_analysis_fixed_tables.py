"""Study statistics on small hand-built tables: cross-checks against independent reference
computations, input validation, and edge cases that must give defined output."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, norm

from study.analysis.bradley_terry import BT_COLUMNS, bradley_terry, fit_scores
from study.analysis.hallucination import hallucination_rates, mcnemar_tests
from study.analysis.pairwise import PAIRWISE_COLUMNS, holm, pairwise_tests, wilson_interval
from study.analysis.quality_control import krippendorff_alpha, quality_control, retest_consistency
from study.analysis.report import FIGURE_FILES, TABLE_FILES, analyze
from study.analysis.votes import (ExclusionRule, VotesError, participant_quality,
                                  read_votes_csv, validate_votes)


def make_votes(rows: list[tuple], kind: str = "main") -> pd.DataFrame:
    """Rows of (participant, item, left, right, choice[, halluc_left, halluc_right])."""
    records = []
    for n, row in enumerate(rows):
        pid, item, left, right, choice, *flags = row
        hl, hr = flags if flags else (0, 0)
        records.append(dict(participant_id=pid, item_id=item, method_left=left,
                            method_right=right, choice=choice, halluc_left=hl, halluc_right=hr,
                            trial_kind=kind, served_at=f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
                            answered_at=f"2025-01-01T01:{n // 60:02d}:{n % 60:02d}Z"))
    return pd.DataFrame(records)


def wins(a: str, b: str, n_a: int, n_b: int, n_tie: int = 0, pid: str = "p1") -> list[tuple]:
    """n_a votes for a, n_b for b, n_tie ties, alternating sides."""
    out = []
    for k, choice in enumerate(["a"] * n_a + ["b"] * n_b + ["t"] * n_tie):
        left, right = (a, b) if k % 2 == 0 else (b, a)
        screen = ("both_good" if choice == "t" else
                  "left" if (choice == "a") == (left == a) else "right")
        out.append((pid, f"i{k}", left, right, screen))
    return out


def run_pairwise(raw: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one participant: clustered test is NaN
        return pairwise_tests(validate_votes(raw), methods)


# ---- cross-checks against closed forms -------------------------------------------------------

def test_wilson_interval_matches_closed_form():
    z = norm.ppf(0.975)
    for k, n in [(7, 10), (0, 12), (30, 30), (55, 120)]:
        centre = (k + z * z / 2) / (n + z * z)
        half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
        low, high = wilson_interval(np.array([k]), np.array([n]))
        assert low[0] == pytest.approx(max(centre - half, 0), abs=1e-10)
        assert high[0] == pytest.approx(min(centre + half, 1), abs=1e-10)


def test_sign_test_and_holm_match_hand_computation():
    raw = make_votes(wins("x", "y", 14, 4, 3) + wins("x", "z", 9, 8) + wins("y", "z", 2, 11, 1))
    table = run_pairwise(raw, ["x", "y", "z"]).set_index(["method_a", "method_b"])
    assert list(run_pairwise(raw, ["x", "y", "z"]).columns) == PAIRWISE_COLUMNS

    def sign_p(k: int, n: int) -> float:  # sum of outcomes at most as likely as the observed
        pmf = binom.pmf(np.arange(n + 1), n, 0.5)
        return min(1.0, pmf[pmf <= pmf[k] * (1 + 1e-9)].sum())

    expected = {("x", "y"): (14, 4, 3), ("x", "z"): (9, 8, 0), ("y", "z"): (2, 11, 1)}
    p = {}
    for pair, (wa, wb, t) in expected.items():
        row = table.loc[pair]
        assert (row["wins_a"], row["wins_b"], row["ties"], row["n_votes"]) == (wa, wb, t,
                                                                                wa + wb + t)
        assert row["win_rate_a"] == pytest.approx(wa / (wa + wb))
        p[pair] = sign_p(wa, wa + wb)
        assert row["naive_p_value"] == pytest.approx(p[pair], rel=1e-9)
    # Holm by hand: sort, multiply by (m - rank), running maximum, cap at 1
    order = sorted(p, key=p.get)
    running, holm_hand = 0.0, {}
    for rank, pair in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[pair]))
        holm_hand[pair] = running
    for pair in p:
        assert table.loc[pair, "naive_p_holm"] == pytest.approx(holm_hand[pair], rel=1e-9)
    # one participant: the rater-clustered decision test is undefined, never silently naive
    assert table["p_value"].isna().all() and not table["significant"].any()


def test_holm_is_not_holm_sidak():
    p = np.array([0.01, 0.02, 0.03])
    assert holm(p) == pytest.approx([0.03, 0.04, 0.04])


def test_mcnemar_is_binomial_on_discordant_pairs_and_rates_are_per_appearance():
    rows = ([("p1", f"i{k}", "x", "y", "left", 1, 0) for k in range(9)]     # only x flagged
            + [("p1", f"j{k}", "y", "x", "left", 0, 1) for k in range(2)]   # x on the right
            + [("p1", f"k{k}", "x", "y", "right", 0, 1) for k in range(3)]  # only y flagged
            + [("p1", f"l{k}", "x", "y", "left", 1, 1) for k in range(4)]   # both
            + [("p1", f"m{k}", "x", "y", "left", 0, 0) for k in range(5)])  # neither
    votes = validate_votes(make_votes(rows))
    with pytest.warns(UserWarning, match="undefined"):  # one rater: clustered test undefined
        row = mcnemar_tests(votes, ["x", "y"]).iloc[0]
    b, c = 11, 3
    assert (row["only_a"], row["only_b"], row["both_flagged"], row["neither"]) == (b, c, 4, 5)
    assert row["naive_p_value"] == pytest.approx(min(1, 2 * binom.cdf(min(b, c), b + c, 0.5)))
    assert row["rate_diff"] == pytest.approx((b - c) / 23) and np.isnan(row["p_value"])
    rates = hallucination_rates(votes, ["x", "y"]).set_index("method")
    assert rates.loc["x", "n_flagged"] == 15 and rates.loc["y", "n_flagged"] == 7
    assert rates.loc["x", "rate"] == pytest.approx(15 / 23)


def test_bradley_terry_matches_closed_form_and_zermelo_iteration():
    # two methods: the MLE difference is log(wins ratio) (ties are set aside before the fit)
    fit = fit_scores(np.array([[0, 1]]), np.array([[30, 10]]), 2)
    assert fit.converged
    assert fit.theta[0] - fit.theta[1] == pytest.approx(math.log(30 / 10), abs=1e-8)
    assert fit.theta.sum() == pytest.approx(0, abs=1e-12)
    # three methods: Zermelo / MM iteration (Hunter 2004) as an independent reference
    w = np.array([[0, 12, 20], [8, 0, 15], [5, 9, 0]], float)
    p = np.ones(3)
    for _ in range(5000):
        n = w + w.T
        p = w.sum(axis=1) / np.array([sum(n[i, j] / (p[i] + p[j]) for j in range(3) if j != i)
                                      for i in range(3)])
        p /= np.exp(np.log(p).mean())
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    fitted = fit_scores(pairs, np.array([[w[i, j], w[j, i]] for i, j in pairs]), 3).theta
    assert fitted == pytest.approx(np.log(p), abs=1e-8)


def test_agreement_uses_canonical_labels_not_sides():
    rows = []
    for item in range(6):
        winner = "x" if item % 2 else "y"
        for pid, flip in [("p1", False), ("p2", True), ("p3", item == 0)]:
            left, right = ("y", "x") if flip else ("x", "y")
            rows.append((pid, f"i{item}", left, right, "left" if left == winner else "right"))
    votes = validate_votes(make_votes(rows))
    alpha, n_units, _ = krippendorff_alpha(votes)
    assert n_units == 6 and alpha == pytest.approx(1.0)  # same method preferred, sides differ


def test_retest_consistency_compares_preferred_method():
    main = make_votes([("p1", "i1", "x", "y", "left"), ("p1", "i2", "x", "y", "right"),
                       ("p1", "i3", "x", "y", "both_bad")])
    repeat = make_votes([("p1", "i1", "y", "x", "right"),   # x again: consistent
                         ("p1", "i2", "y", "x", "right"),   # x now, y before: inconsistent
                         ("p1", "i3", "y", "x", "both_good"),  # tie again: consistent
                         ("p1", "i9", "y", "x", "left")], kind="repeat")  # no original
    votes = validate_votes(pd.concat([main, repeat], ignore_index=True))
    assert retest_consistency(votes) == (2, 3, 1)


# ---- validation ------------------------------------------------------------------------------

def test_missing_columns_and_bad_values_are_clear_errors():
    raw = make_votes(wins("x", "y", 2, 1))
    with pytest.raises(VotesError, match="halluc_left"):
        validate_votes(raw.drop(columns=["halluc_left"]))
    bad = raw.copy()
    bad.loc[0, "choice"] = "maybe"
    with pytest.raises(VotesError, match="maybe"):
        validate_votes(bad)
    bad = raw.copy()
    bad.loc[0, "trial_kind"] = "warmup"
    with pytest.raises(VotesError, match="warmup"):
        validate_votes(bad)


def test_unknown_methods_are_dropped_with_a_warning_but_attention_trials_kept():
    raw = pd.concat([make_votes(wins("x", "y", 3, 2) + wins("x", "typo", 2, 2)),
                     make_votes([("p1", "a1", "ref", "broken", "left")], kind="attention")],
                    ignore_index=True)
    with pytest.warns(UserWarning, match="typo"):
        votes = validate_votes(raw, methods=["x", "y"])
    assert set(votes["method_a"]) | set(votes["method_b"]) >= {"x", "y"}
    assert "typo" not in set(votes["method_left"]) | set(votes["method_right"])
    assert (votes["trial_kind"] == "attention").sum() == 1


def test_exclusion_rule_is_applied_and_reported():
    att = make_votes([("good", "a1", "r", "b", "left"), ("good", "a2", "b", "r", "right"),
                      ("bad", "a1", "r", "b", "right"), ("bad", "a2", "b", "r", "right")],
                     kind="attention")
    att["expected_choice"] = ["left", "right", "left", "right"]
    main = make_votes(wins("x", "y", 3, 1, pid="good") + wins("x", "y", 0, 4, pid="bad")
                      + wins("x", "y", 1, 1, pid="none"))
    votes = validate_votes(pd.concat([att, main], ignore_index=True))
    quality = participant_quality(votes, ExclusionRule(min_attention_pass=0.8)).set_index(
        "participant_id")
    assert quality.loc["bad", "excluded"] and "attention" in quality.loc["bad", "reason"]
    assert not quality.loc["good", "excluded"]
    assert not quality.loc["none", "excluded"]
    assert "no scorable attention" in quality.loc["none", "reason"]
    qc = quality_control(votes, votes[votes["participant_id"] != "bad"], quality.reset_index())
    assert qc.loc[qc["check"] == "excluded_participant", "detail"].str.startswith("bad").all()


# ---- edge cases: defined output, no crash ----------------------------------------------------

def test_pair_without_decisive_votes_has_nan_p_and_is_left_out_of_holm():
    raw = make_votes(wins("x", "y", 10, 1) + wins("x", "z", 0, 0, 3) + wins("y", "z", 2, 2))
    raw["participant_id"] = [f"p{k % 4}" for k in range(len(raw))]  # clusterable
    table = run_pairwise(raw, ["x", "y", "z"]).set_index(["method_a", "method_b"])
    row = table.loc[("x", "z")]
    assert row["ties"] == 3 and np.isnan(row["win_rate_a"]) and np.isnan(row["p_value"])
    assert np.isnan(row["p_holm"]) and not row["significant"] and np.isnan(row["ci_low"])
    assert row["note"].startswith("no decisive vote")
    # Holm family of two: the defined p-values are adjusted among themselves
    p_xy, p_yz = table.loc[("x", "y"), "p_value"], table.loc[("y", "z"), "p_value"]
    assert np.isfinite(p_xy) and np.isfinite(p_yz)
    assert table.loc[("x", "y"), "p_holm"] == pytest.approx(min(1, 2 * min(p_xy, p_yz)))


def test_all_ties_give_undefined_scores_and_win_rates(tmp_path):
    raw = make_votes(wins("x", "y", 0, 0, 6) + wins("y", "z", 0, 0, 4) + wins("x", "z", 0, 0, 4))
    with pytest.warns(UserWarning, match="Bradley-Terry scores are NaN"):
        result = analyze(raw, tmp_path, target="x", n_boot=20)
    assert result.tables["pairwise_tests"]["win_rate_a"].isna().all()
    assert result.tables["bradley_terry"]["score"].isna().all()  # no decisive vote: no order
    assert result.tables["summary"]["quality_pref"].isna().all()


def test_single_participant_runs_end_to_end(tmp_path):
    raw = make_votes(wins("mobilepicasso", "x", 7, 2, 1) + wins("mobilepicasso", "y", 5, 5))
    with pytest.warns(UserWarning, match="only 1 participant"):
        result = analyze(raw, tmp_path, n_boot=30)
    assert len(result.tables["summary"]) == 2
    # no interval collapses to a point: with one rater they are undefined, and say so
    for name, columns in [("pairwise_tests", ["ci_low", "ci_high", "p_value"]),
                          ("bradley_terry", ["ci_low", "ci_high", "se"]),
                          ("summary", ["win_rate_ci_low", "quality_ci_high", "halluc_diff_ci_low"])]:
        assert result.tables[name][columns].isna().all().all(), name
    assert result.tables["bradley_terry"]["note"].str.contains("participant").all()
    alpha = result.tables["quality_control"].set_index("check").loc["krippendorff_alpha"]
    assert np.isnan(alpha["value"]) and "two participants" in alpha["detail"]


@pytest.mark.parametrize("content", ["", "participant_id,item_id,method_left,method_right,choice,"
                                         "halluc_left,halluc_right,trial_kind,served_at,"
                                         "answered_at\n"])
def test_empty_file_gives_empty_tables_with_headers(tmp_path, content):
    path = tmp_path / "votes.csv"
    path.write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = analyze(read_votes_csv(path), tmp_path / "out", n_boot=10)
    assert not (tmp_path / "out" / "hallucination_cochran_q.csv").exists()
    for name in TABLE_FILES.values():
        assert (tmp_path / "out" / name).exists()
    for name in FIGURE_FILES.values():
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert list(pd.read_csv(tmp_path / "out" / "pairwise_tests.csv").columns) == PAIRWISE_COLUMNS
    assert result.tables["pairwise_tests"].empty and "0 votes" in result.summary_markdown


def test_missing_target_warns_and_writes_empty_summary(tmp_path):
    with pytest.warns(UserWarning, match="target"):
        result = analyze(make_votes(wins("x", "y", 3, 1)), tmp_path, n_boot=10)
    assert result.tables["summary"].empty
