"""One test per defect of the statistics audit (each fails on the code before the fix), plus the
cross-checks that keep the new numbers equal to the reference libraries where they apply."""
from __future__ import annotations

import math
import warnings

import krippendorff
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit
from scipy.stats import binomtest
from scipy.stats import t as student_t
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.sandwich_covariance import cov_cluster_2groups
from test_analysis_fixed_tables import make_votes, wins

from study.analysis import bradley_terry as bt_module
from study.analysis.__main__ import main as analysis_main
from study.analysis.bradley_terry import ELO_SCALE, bradley_terry, sum_zero_basis
from study.analysis.clustered import codes, satterthwaite_df, twoway_cov
from study.analysis.hallucination import mcnemar_tests
from study.analysis.pairwise import holm, pairwise_tests, sign_test_p
from study.analysis.plots import plot_bradley_terry, plot_hallucination, plot_win_rate_matrix
from study.analysis.quality_control import (_unit_coincidences, alpha_from_coincidences,
                                            krippendorff_alpha, quality_control)
from study.analysis.report import analyze
from study.analysis.simulate_votes import simulate_votes
from study.analysis.votes import (ExclusionRule, VotesError, participant_quality,
                                  read_votes_csv, validate_votes)

METHODS = ["a", "b", "c"]


def spread(rows: list[tuple], n_people: int = 6) -> pd.DataFrame:
    """make_votes, with the votes dealt round-robin to participants, each vote on a new item
    for its participant (items are shared across participants)."""
    raw = make_votes(rows)
    raw["participant_id"] = [f"p{k % n_people}" for k in range(len(raw))]
    raw["item_id"] = [f"i{k // n_people}" for k in range(len(raw))]
    return raw


@pytest.fixture(scope="module")
def clustered_votes() -> pd.DataFrame:
    raw = simulate_votes(METHODS, {"a": 0.5, "c": -0.3}, n_participants=14,
                         votes_per_participant=30, n_items=30, participant_sd=0.5, item_sd=0.5,
                         halluc_rates={"a": 0.1, "b": 0.3, "c": 0.2}, seed=5)
    votes = validate_votes(raw)
    return votes[votes["trial_kind"] == "main"].reset_index(drop=True)


# ---- reference libraries -----------------------------------------------------------------------

def test_win_rate_test_equals_statsmodels_two_way_cluster_covariance(clustered_votes):
    table = pairwise_tests(clustered_votes, METHODS).set_index(["method_a", "method_b"])
    for (a, b), row in table.iterrows():
        pair = clustered_votes[(clustered_votes["method_a"] == a)
                               & (clustered_votes["method_b"] == b) & clustered_votes["decisive"]]
        y = (pair["label"] == "a").to_numpy(float)
        fit = sm.OLS(y, np.ones((len(y), 1))).fit()
        cov, _, _ = cov_cluster_2groups(fit, codes(pair["participant_id"]), codes(pair["item_id"]))
        df = satterthwaite_df(np.ones(len(y)), codes(pair["participant_id"]),
                              codes(pair["item_id"]))
        t = (y.mean() - 0.5) / math.sqrt(cov[0, 0])
        assert row["win_rate_a"] == pytest.approx(y.mean(), abs=1e-12)
        assert row["p_value"] == pytest.approx(2 * student_t.sf(abs(t), df), rel=1e-9)
        assert 1 <= df <= min(pair["participant_id"].nunique(), pair["item_id"].nunique()) - 1


def test_bradley_terry_equals_statsmodels_logit_with_two_way_clusters(clustered_votes):
    bt = bradley_terry(clustered_votes, METHODS).set_index("method").loc[METHODS]
    d = clustered_votes[clustered_votes["decisive"]]
    basis = sum_zero_basis(3)
    index = {m: k for k, m in enumerate(METHODS)}
    x = basis[d["method_a"].map(index)] - basis[d["method_b"].map(index)]
    fit = sm.Logit((d["label"] == "a").to_numpy(float), x).fit(disp=0)
    cov, _, _ = cov_cluster_2groups(fit, codes(d["participant_id"]), codes(d["item_id"]))
    assert bt["score"].to_numpy() == pytest.approx(basis @ fit.params, abs=1e-7)
    assert bt["se"].to_numpy() == pytest.approx(np.sqrt(np.diag(basis @ cov @ basis.T)), rel=1e-6)


def test_satterthwaite_df_equals_the_trace_formula():
    rng = np.random.default_rng(0)
    n = 60
    participant, item = rng.integers(0, 7, n), rng.integers(0, 9, n)
    q2 = rng.uniform(0.2, 2.0, n)
    indicator = [(g[:, None] == g[None, :]).astype(float) for g in
                 (participant, item, participant * 100 + item)]
    factor = [len(set(g)) / (len(set(g)) - 1) for g in (participant, item,
                                                        participant * 100 + item)]
    a = factor[0] * indicator[0] + factor[1] * indicator[1] - factor[2] * indicator[2]
    bs = a * q2[None, :]  # B S with S = diag(q2) (the weights folded into S)
    expected = np.trace(bs) ** 2 / np.trace(bs @ bs)
    assert satterthwaite_df(q2, participant, item) == pytest.approx(min(expected, 6), rel=1e-10)


def test_holm_and_sign_test_equal_statsmodels_and_scipy():
    p = np.array([0.04, np.nan, 0.001, 0.03, 0.2])
    defined = ~np.isnan(p)
    expected = multipletests(p[defined], method="holm")[1]
    assert holm(p)[defined] == pytest.approx(expected, rel=1e-12) and np.isnan(holm(p)[1])
    for k, n in [(0, 5), (3, 10), (7, 10), (40, 61), (30, 60)]:
        assert sign_test_p(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)


def test_two_way_covariance_falls_back_when_not_positive():
    scores = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    # two participants, two items, one observation per cell arranged so V_P + V_I < V_PI
    robust = twoway_cov(scores, np.eye(1), np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]))
    assert robust.cov[0, 0] >= 0 and "one-way" in robust.note


# ---- Bradley-Terry -----------------------------------------------------------------------------

def test_ties_are_set_aside_so_sigmoid_of_the_score_gap_is_the_decisive_win_share():
    raw = spread(wins("x", "y", 30, 10, 40) + wins("x", "z", 12, 12) + wins("y", "z", 12, 12))
    bt = bradley_terry(validate_votes(raw), ["x", "y", "z"]).set_index("method")
    gap = bt.loc["x", "score"] - bt.loc["y", "score"]
    # x vs y alone would give log(30/10); with z tied to both the MLE balances three pairs, and
    # must not move with the 40 ties (half-win ties would pull the gap towards log(50/30))
    no_ties = spread(wins("x", "y", 30, 10) + wins("x", "z", 12, 12) + wins("y", "z", 12, 12))
    bt0 = bradley_terry(validate_votes(no_ties), ["x", "y", "z"]).set_index("method")
    assert gap == pytest.approx(bt0.loc["x", "score"] - bt0.loc["y", "score"], abs=1e-8)
    two = bradley_terry(validate_votes(spread(wins("x", "y", 30, 10, 40))), ["x", "y"])
    assert expit(two["score"].iloc[0] - two["score"].iloc[1]) == pytest.approx(0.75, abs=1e-8)


def test_separation_gives_nan_and_a_warning_not_a_ridge_number():
    raw = spread(wins("champ", "x", 20, 0) + wins("champ", "y", 20, 0) + wins("x", "y", 6, 6))
    with pytest.warns(UserWarning, match="separation.*champ"):
        bt = bradley_terry(validate_votes(raw), ["champ", "x", "y"])
    assert bt[["score", "ci_low", "ci_high", "elo"]].isna().all().all()
    assert bt["note"].str.contains("infinite").all()


def test_method_without_votes_gets_nan_not_zero_with_a_zero_width_interval():
    raw = spread(wins("x", "y", 12, 8) + wins("x", "z", 9, 11) + wins("y", "z", 10, 10))
    with pytest.warns(UserWarning, match="ghost has no decisive vote"):
        bt = bradley_terry(validate_votes(raw), ["ghost", "x", "y", "z"]).set_index("method")
    assert bt.loc["ghost", ["score", "ci_low", "ci_high"]].isna().all()
    assert np.isfinite(bt.loc[["x", "y", "z"], "score"]).all()
    assert bt.loc[["x", "y", "z"], "score"].sum() == pytest.approx(0, abs=1e-10)


def test_disconnected_comparison_graph_gives_nan_not_rank_one_for_all():
    raw = spread(wins("a", "b", 8, 5) + wins("c", "d", 7, 6))
    with pytest.warns(UserWarning, match="disconnected"):
        bt = bradley_terry(validate_votes(raw), ["a", "b", "c", "d"])
    assert bt["score"].isna().all() and bt["rank"].isna().all()


def test_solver_status_is_checked(monkeypatch):
    real = bt_module.minimize

    def failing(*args, **kwargs):
        result = real(*args, **kwargs)
        result.success, result.message = False, "forced failure"
        result.jac = result.jac + 1.0
        return result

    monkeypatch.setattr(bt_module, "minimize", failing)
    raw = spread(wins("x", "y", 12, 8) + wins("x", "z", 9, 11) + wins("y", "z", 10, 10))
    with pytest.warns(UserWarning, match="did not converge"):
        bt = bradley_terry(validate_votes(raw), ["x", "y", "z"])
    assert bt["score"].isna().all()


# ---- hallucination and position bias ----------------------------------------------------------

def test_hallucination_uses_clustered_mcnemar_and_rate_differences(clustered_votes):
    raw = clustered_votes.copy()
    # rater-level habits: the first four raters flag every output of "b"
    habit = raw["participant_id"].isin([f"p{k:03d}" for k in range(4)])
    raw.loc[habit & (raw["method_b"] == "b"), "halluc_b"] = 1
    raw.loc[habit & (raw["method_a"] == "b"), "halluc_a"] = 1
    table = mcnemar_tests(raw, METHODS).set_index(["method_a", "method_b"])
    row = table.loc[("a", "b")]
    pair = raw[(raw["method_a"] == "a") & (raw["method_b"] == "b")]
    diff = (pair["halluc_a"] - pair["halluc_b"]).to_numpy(float)
    fit = sm.OLS(diff, np.ones((len(diff), 1))).fit()
    cov, _, _ = cov_cluster_2groups(fit, codes(pair["participant_id"]), codes(pair["item_id"]))
    assert row["rate_diff"] == pytest.approx(diff.mean())
    q = student_t.ppf(0.975, satterthwaite_df(np.ones(len(diff)), codes(pair["participant_id"]),
                                              codes(pair["item_id"])))
    assert row["diff_ci_high"] - row["diff_ci_low"] == pytest.approx(2 * q * math.sqrt(cov[0, 0]))
    assert row["p_value"] > row["naive_p_value"]  # clustered flags are weaker evidence
    assert set(table["test"]) == {table["test"].iloc[0]} and "clustered" in table["test"].iloc[0]


def test_hallucination_rate_intervals_widen_with_rater_clustering(clustered_votes, tmp_path):
    raw = clustered_votes.copy()
    heavy = raw["participant_id"].isin([f"p{k:03d}" for k in range(3)])
    raw.loc[heavy, ["halluc_left", "halluc_right"]] = 1  # analyze re-reads the screen columns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rates = analyze(raw, tmp_path, n_boot=20).tables["hallucination"]
    width = rates["ci_high"] - rates["ci_low"]
    naive = rates["naive_ci_high"] - rates["naive_ci_low"]
    assert (width > 1.2 * naive).all() and (rates["design_effect"] > 1.3).all()


def test_position_bias_test_is_clustered_by_rater():
    raw = simulate_votes(METHODS, n_participants=16, votes_per_participant=30, seed=2,
                         attention_per_participant=0, repeats_per_participant=0)
    lefty = raw["participant_id"].isin(["p000", "p001", "p002"]) & (raw["trial_kind"] == "main")
    raw.loc[lefty, "choice"] = "left"
    votes = validate_votes(raw)
    qc = quality_control(votes, votes, participant_quality(votes, ExclusionRule()),
                         n_boot=10).set_index("check")
    clustered = qc.loc["position_bias_left_share", "p_value"]
    naive = qc.loc["position_bias_naive_p", "p_value"]
    assert naive < 0.01 < clustered  # three straight-liners are not 90 independent votes
    assert "cluster" in qc.loc["position_bias_left_share", "test"]


# ---- input validation ---------------------------------------------------------------------------

def base_raw() -> pd.DataFrame:
    return spread(wins("x", "y", 4, 3, 1))


@pytest.mark.parametrize("value, expected", [("yes", 1), ("TRUE", 1), ("True", 1), ("1", 1),
                                             ("no", 0), ("false", 0), (0, 0), (1.0, 1)])
def test_flag_spellings_are_read_explicitly(value, expected):
    raw = base_raw()
    raw["halluc_left"] = raw["halluc_left"].astype(object)
    raw.loc[0, "halluc_left"] = value
    assert validate_votes(raw).loc[0, "halluc_left"] == expected


@pytest.mark.parametrize("value, message", [("flagged", "must be 0/1"), ("2", "must be 0/1"),
                                            ("", "is empty"), (np.nan, "is empty"),
                                            (None, "is empty")])
def test_unreadable_or_missing_flags_are_refused(value, message):
    raw = base_raw()
    raw["halluc_right"] = raw["halluc_right"].astype(object)
    raw.loc[2, "halluc_right"] = value
    with pytest.raises(VotesError, match=message):
        validate_votes(raw)


def test_duplicates_missing_ids_names_and_expected_choice():
    raw = base_raw()
    with pytest.raises(VotesError, match="exact duplicates"):
        validate_votes(pd.concat([raw, raw.iloc[[0]]], ignore_index=True))
    again = raw.iloc[[0]].copy()
    again["choice"] = "right"
    with pytest.raises(VotesError, match="repeat an earlier vote"):
        validate_votes(pd.concat([raw, again], ignore_index=True))
    missing = raw.copy()
    missing.loc[3, "participant_id"] = np.nan
    with pytest.raises(VotesError, match="no participant_id"):
        validate_votes(missing)
    shouting = raw.copy()
    shouting["method_left"] = shouting["method_left"].str.upper() + " "
    votes = validate_votes(shouting)
    assert set(votes["method_a"]) | set(votes["method_b"]) == {"x", "y"}
    odd = raw.copy()
    odd["expected_choice"] = ""
    odd.loc[0, "expected_choice"] = "lft"
    with pytest.raises(VotesError, match="expected_choice"):
        validate_votes(odd)


def test_cli_refuses_bad_settings_and_non_utf8_files_in_one_line(tmp_path, capsys):
    path = tmp_path / "votes.csv"
    base_raw().to_csv(path, index=False)
    for flag, value, message in [("--alpha", "1.5", "in (0, 1)"), ("--alpha", "0", "in (0, 1)"),
                                 ("--bootstrap", "-5", "positive integer"),
                                 ("--bootstrap", "0", "positive integer")]:
        with pytest.raises(SystemExit) as exit_info:
            analysis_main(["analyze", "--votes", str(path), "--out", str(tmp_path / "o"),
                           flag, value])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes(path.read_bytes().replace(b"x", "\xe9".encode("latin-1")))
    assert analysis_main(["analyze", "--votes", str(latin), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not UTF-8" in err[0] and "Traceback" not in err[0]
    with pytest.raises(VotesError, match="alpha"):
        analyze(validate_votes(base_raw()), tmp_path / "o", alpha=1.5)


# ---- exports -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study_result(tmp_path_factory):
    raw = simulate_votes(["mobilepicasso", "x", "y"], {"mobilepicasso": 0.6, "y": -0.4},
                         n_participants=16, votes_per_participant=30, careless_share=0.125,
                         item_sd=0.3, repeats_per_participant=4, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(raw, tmp_path_factory.mktemp("study"), n_boot=60)


def test_quality_pref_is_net_preference_not_odds(study_result, tmp_path):
    summary = study_result.tables["summary"]
    for _, r in summary.iterrows():
        assert r["quality_pref"] == pytest.approx(
            (r["wins_target"] - r["wins_baseline"]) / (r["wins_target"] + r["wins_baseline"]))
        assert r["preference_odds"] == pytest.approx(r["wins_target"] / r["wins_baseline"])
    raw = spread(wins("mobilepicasso", "x", 20, 10), n_people=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        row = analyze(raw, tmp_path, n_boot=5).tables["summary"].iloc[0]
    assert row["quality_pref"] == pytest.approx(1 / 3) and row["preference_odds"] == 2.0


def test_every_row_names_its_method_and_sizes(study_result):
    for name in ("pairwise_tests", "bradley_terry", "hallucination", "hallucination_pairwise",
                 "summary", "quality_control"):
        table = study_result.tables[name]
        for column in ("test", "interval", "correction", "alpha", "bootstrap_rounds"):
            assert column in table and table[column].notna().all(), (name, column)
    for name in ("pairwise_tests", "bradley_terry", "hallucination", "hallucination_pairwise",
                 "summary"):
        assert (study_result.tables[name]["n_participants"] > 1).all(), name
    summary = study_result.tables["summary"]
    people = study_result.tables["participants"]
    assert (summary["participants_excluded"] == people["excluded"].sum()).all()
    assert "excluded" in study_result.summary_markdown
    assert "80% power to detect a win rate" in study_result.summary_markdown


def test_elo_matrices_and_rank_intervals(study_result):
    bt = study_result.tables["bradley_terry"].set_index("method")
    assert bt["elo"].to_numpy() == pytest.approx(1000 + 400 / math.log(10) * bt["score"])
    assert ELO_SCALE == pytest.approx(400 / math.log(10))
    assert ((1 <= bt["rank_ci_low"]) & (bt["rank_ci_low"] <= bt["rank"])
            & (bt["rank"] <= bt["rank_ci_high"]) & (bt["rank_ci_high"] <= len(bt))).all()
    predicted = study_result.tables["predicted_win_matrix"]
    a, b = predicted.index[0], predicted.index[1]
    assert predicted.loc[a, b] == pytest.approx(expit(bt.loc[a, "score"] - bt.loc[b, "score"]))
    counts = study_result.tables["vote_count_matrix"]
    pairwise = study_result.tables["pairwise_tests"]
    for _, r in pairwise.iterrows():
        assert counts.loc[r["method_a"], r["method_b"]] == r["wins_a"]
        assert counts.loc[r["method_b"], r["method_a"]] == r["wins_b"]
    power = study_result.tables["power"]
    assert ((power["detectable_win_rate"] > 0.5) & (power["detectable_win_rate"] < 1)).all()


def test_retest_chance_baseline_and_agreement_with_interval(study_result):
    qc = study_result.tables["quality_control"].set_index("check")
    from study.analysis.quality_control import retest_pairs

    votes = validate_votes(simulate_votes(["mobilepicasso", "x", "y"],
                                          {"mobilepicasso": 0.6, "y": -0.4}, n_participants=16,
                                          votes_per_participant=30, careless_share=0.125,
                                          item_sd=0.3, repeats_per_participant=4, seed=4))
    kept_ids = study_result.tables["participants"].query("not excluded")["participant_id"]
    matched, _ = retest_pairs(votes[votes["participant_id"].isin(kept_ids)])
    table = pd.crosstab(matched["label_original"], matched["label"]).reindex(
        index=["a", "b", "tie"], columns=["a", "b", "tie"], fill_value=0).to_numpy()
    n = table.sum()
    assert qc.loc["test_retest_chance", "value"] == pytest.approx(
        (table.sum(1) / n) @ (table.sum(0) / n))
    assert qc.loc["test_retest_kappa", "value"] == pytest.approx(
        cohens_kappa(table, return_results=False))
    k = qc.loc["krippendorff_alpha"]
    alpha, _, _ = krippendorff_alpha(votes[votes["participant_id"].isin(kept_ids)
                                           & (votes["trial_kind"] == "main")])
    assert k["value"] == pytest.approx(alpha) and k["bootstrap_rounds"] == 60
    assert k["ci_low"] <= k["value"] <= k["ci_high"] and k["ci_low"] < k["ci_high"]
    # the bootstrap's coincidence-matrix alpha is the library's alpha on the full data
    kept_main = votes[votes["participant_id"].isin(kept_ids) & (votes["trial_kind"] == "main")]
    full = alpha_from_coincidences(_unit_coincidences(kept_main).sum(axis=0))
    assert full == pytest.approx(alpha, abs=1e-12)
    data = [[0, 1, 1, 2, np.nan, 0], [0, 1, 0, 2, 1, np.nan], [np.nan, 1, 0, 2, 1, 0]]
    coincidence = _unit_coincidences(pd.DataFrame([
        dict(participant_id=str(r), item_id=str(u), method_a="a", method_b="b",
             label=["a", "b", "tie"][int(v)])
        for r, row in enumerate(data) for u, v in enumerate(row) if not np.isnan(v)]))
    assert alpha_from_coincidences(coincidence.sum(axis=0)) == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"), abs=1e-12)


def test_plots_show_n_and_intervals_and_start_shares_at_zero(study_result):
    hall = plot_hallucination(study_result.tables["hallucination"])
    ax = hall.axes[0]
    assert ax.get_xlim()[0] == 0 and all("n=" in t.get_text() for t in ax.get_yticklabels())
    bt = plot_bradley_terry(study_result.tables["bradley_terry"]).axes[0]
    assert all("n=" in t.get_text() for t in bt.get_yticklabels())
    low, high = bt.get_xlim()
    assert low < 0 < high and low == pytest.approx(-high)
    matrix = plot_win_rate_matrix(study_result.tables["pairwise_tests"],
                                  sorted(study_result.methods)).axes[0]
    texts = [t.get_text() for t in matrix.texts]
    assert texts and all("n=" in t and "[" in t for t in texts)


def test_calibration_command_writes_a_resumable_csv(tmp_path, capsys):
    argv = ["simulate-calibration", "--studies", "3", "--scenarios", "null_independent",
            "--out", str(tmp_path)]
    assert analysis_main(argv) == 0
    first = pd.read_csv(tmp_path / "studies_null_independent.csv")
    assert analysis_main(argv) == 0  # resumes: nothing new to run
    assert len(pd.read_csv(tmp_path / "studies_null_independent.csv")) == len(first) == 3
    table = pd.read_csv(tmp_path / "calibration.csv")
    assert {"fwer_significant", "coverage_win_rate", "coverage_bt_strength"} <= set(
        table["metric"])
    assert (table["replicates"] > 0).all()
    assert analysis_main(["simulate-calibration", "--scenarios", "nope",
                          "--out", str(tmp_path)]) == 2
