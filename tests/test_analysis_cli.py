"""`analyze` and `power` through their command-line entry points."""
from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, binomtest

from study.analysis import cli
from study.analysis.bradley_terry import BT_COLUMNS
from study.analysis.hallucination import MCNEMAR_COLUMNS, RATE_COLUMNS
from study.analysis.pairwise import PAIRWISE_COLUMNS
from study.analysis.power import (POWER_COLUMNS, decisive_votes_needed, exact_sign_test_power,
                                  plan_study)
from study.analysis.quality_control import QC_COLUMNS
from study.analysis.simulate_votes import simulate_votes
from study.analysis.summary import SUMMARY_COLUMNS

EXPECTED = {
    "pairwise_tests.csv": PAIRWISE_COLUMNS, "bradley_terry.csv": BT_COLUMNS,
    "hallucination.csv": RATE_COLUMNS, "hallucination_pairwise.csv": MCNEMAR_COLUMNS,
    "summary.csv": SUMMARY_COLUMNS, "quality_control.csv": QC_COLUMNS,
    "power.csv": POWER_COLUMNS,
}
METHOD_COLUMNS = ["test", "interval", "correction", "alpha", "bootstrap_rounds"]
FIGURES = ["win_rate_matrix.png", "bradley_terry.png", "hallucination.png"]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def votes_csv(tmp_path: Path) -> Path:
    votes = simulate_votes(["mobilepicasso", "base_a", "base_b"],
                           {"mobilepicasso": 0.5, "base_a": 0.0, "base_b": -0.5},
                           n_participants=12, votes_per_participant=24, careless_share=0.1, seed=3)
    path = tmp_path / "votes.csv"
    votes.to_csv(path, index=False)
    return path


def check_outputs(out: Path) -> None:
    for name, columns in EXPECTED.items():
        table = pd.read_csv(out / name)
        assert list(table.columns) == columns, name
        # every row names its test, interval, correction, alpha and resampling rounds
        assert set(METHOD_COLUMNS) <= set(table.columns), name
        assert table["alpha"].notna().all() and table["bootstrap_rounds"].notna().all(), name
    for name in ("vote_count_matrix.csv", "predicted_win_matrix.csv"):
        matrix = pd.read_csv(out / name, index_col=0)
        assert list(matrix.index) == list(matrix.columns) == sorted(matrix.columns)
    for name in FIGURES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "mobilepicasso vs baselines" in (out / "summary.md").read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["baseline"]) == ["base_a", "base_b"]


def test_analyze_from_csv_writes_every_table(tmp_path, votes_csv, capsys):
    out = tmp_path / "results"
    assert run(["analyze", "--votes", str(votes_csv), "--out", str(out), "--bootstrap", "50",
                "--min-attention-pass", "0.6"]) == 0
    check_outputs(out)
    assert "wrote" in capsys.readouterr().out
    qc = pd.read_csv(out / "quality_control.csv").set_index("check")
    assert qc.loc["participants", "value"] == 12


def test_analyze_from_database_calls_votes_frame(tmp_path, votes_csv, monkeypatch):
    seen = []
    fake = types.ModuleType("study.db")
    fake.votes_frame = lambda url: seen.append(url) or pd.read_csv(votes_csv)
    monkeypatch.setitem(sys.modules, "study.db", fake)
    out = tmp_path / "from_db"
    assert run(["analyze", "--db", str(tmp_path / "study.db"), "--out", str(out)]) == 2
    assert seen == []  # a missing SQLite file is an error, not a new empty database
    (tmp_path / "study.db").touch()
    assert run(["analyze", "--db", str(tmp_path / "study.db"), "--out", str(out),
                "--bootstrap", "20"]) == 0
    assert seen == [f"sqlite:///{(tmp_path / 'study.db').resolve()}"]
    check_outputs(out)
    assert run(["analyze", "--db", "postgresql+psycopg://u@h/db", "--out", str(out),
                "--bootstrap", "1"]) == 0
    assert seen[-1] == "postgresql+psycopg://u@h/db"


def test_analyze_reports_bad_input_and_unknown_methods(tmp_path, votes_csv, capsys):
    bad = pd.read_csv(votes_csv).drop(columns=["choice"])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert run(["analyze", "--votes", str(tmp_path / "bad.csv"), "--out", str(tmp_path)]) == 2
    assert "missing columns ['choice']" in capsys.readouterr().err
    assert run(["analyze", "--votes", str(votes_csv), "--out", str(tmp_path / "o"),
                "--methods", "mobilepicasso,base_a", "--bootstrap", "10"]) == 0
    assert "unknown methods ['base_b']" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "o" / "pairwise_tests.csv")) == 1


def test_python_m_study_analyze(tmp_path, votes_csv):
    root = Path(__file__).resolve().parents[1]
    if not (root / "study" / "cli.py").exists():
        pytest.skip("study/cli.py (harness commands) not in this tree yet")
    subprocess.run([sys.executable, "-m", "study", "analyze", "--votes", str(votes_csv),
                    "--out", str(tmp_path / "sub"), "--bootstrap", "20"],
                   cwd=root, check=True, capture_output=True, timeout=600)
    check_outputs(tmp_path / "sub")


def test_power_matches_exact_binomial(capsys, tmp_path):
    # reference: power from scipy's own exact test, rejection region enumerated outcome by outcome
    def power_by_binomtest(n: int, q: float, alpha: float) -> float:
        ks = np.arange(n + 1)
        reject = np.array([binomtest(k, n, 0.5).pvalue <= alpha for k in ks])
        return float(binom.pmf(ks[reject], n, q).sum())

    n = decisive_votes_needed(0.65)
    assert 85 <= n <= 90
    assert power_by_binomtest(n, 0.65, 0.05) >= 0.8 > power_by_binomtest(n - 1, 0.65, 0.05)
    for size in (20, 49, 90, 133):
        assert exact_sign_test_power(size, 0.6, 0.01)[0] == pytest.approx(
            power_by_binomtest(size, 0.6, 0.01))

    assert run(["power", "--effect", "0.65", "--csv", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert table.loc[0, "decisive_per_pair"] == n and " 90 " in capsys.readouterr().out

    plan = plan_study(0.65, methods=4, ties=0.2, votes_per_participant=40, icc=0.05)
    assert plan.n_pairs == 6 and plan.alpha_per_pair == pytest.approx(0.05 / 6)
    assert plan.decisive_per_pair == decisive_votes_needed(0.65, 0.05 / 6)
    assert plan.design_effect == pytest.approx(1 + (40 / 6 - 1) * 0.05)
    assert plan.votes_per_pair == int(np.ceil(plan.decisive_per_pair * plan.design_effect / 0.8))
    assert plan.participants == int(np.ceil(6 * plan.votes_per_pair / 40))
    assert run(["power", "--effect", "0.5"]) == 2
