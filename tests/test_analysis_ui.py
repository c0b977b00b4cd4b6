"""The Results tab: builds inside the caller's Blocks, shows data only for the admin token."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from study.analysis.simulate_votes import simulate_votes
from study.analysis.ui import SHOWN_FIGURES, SHOWN_TABLES, render_results_tab, results_for_token


def votes() -> pd.DataFrame:
    return simulate_votes(["mobilepicasso", "x", "y"], {"mobilepicasso": 0.5}, n_participants=6,
                          votes_per_participant=18, seed=1)


def test_wrong_or_missing_token_shows_no_data():
    for admin, given in [("s3cret", "guess"), ("s3cret", None), ("s3cret", ""), (None, "s3cret")]:
        view = results_for_token(votes, admin, given)
        assert "token" in view.message and not view.tables and not view.files
        message, *rest = view.outputs()
        assert all(isinstance(t, pd.DataFrame) and t.empty for t in rest[:len(SHOWN_TABLES)])
        assert all(x is None for x in rest[len(SHOWN_TABLES):])


def test_right_token_runs_the_analysis():
    view = results_for_token(votes, "s3cret", "s3cret", n_boot=20)
    assert "mobilepicasso vs baselines" in view.message
    assert set(view.tables) == set(SHOWN_TABLES) and set(view.figures) == set(SHOWN_FIGURES)
    assert {Path(f).name for f in view.files} >= {"pairwise_tests.csv", "summary.csv"}
    assert all(Path(f).exists() for f in view.files)


def test_bad_votes_give_a_message_not_a_traceback():
    view = results_for_token(lambda: votes().drop(columns=["trial_kind"]), "s3cret", "s3cret")
    assert "cannot be analysed" in view.message and not view.tables


def test_tab_builds_inside_the_callers_blocks():
    with gr.Blocks() as demo:
        with gr.Tab("Results"):
            render_results_tab(votes, "s3cret")
    (handler,) = demo.fns.values()
    outputs = handler.fn("wrong")
    assert len(outputs) == len(handler.outputs) == 1 + len(SHOWN_TABLES) + len(SHOWN_FIGURES) + 1
    assert "Wrong" in outputs[0]
