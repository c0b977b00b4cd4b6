"""The app's Results tab: the same analysis as `python -m study analyze`, on the live votes.

Results are shown only to someone holding the admin token: participants must not see interim
results (it would bias their votes), so a missing or wrong token yields a message and no data.
The handler logic lives in :func:`results_for_token`, a plain function that tests call directly.
"""
from __future__ import annotations

import hmac
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from study.analysis.report import analyze
from study.analysis.votes import VotesError

SHOWN_TABLES = ("summary", "pairwise_tests", "bradley_terry", "hallucination",
                "hallucination_pairwise", "quality_control", "participants")
SHOWN_FIGURES = ("win_rate_matrix", "bradley_terry", "hallucination")


@dataclass
class ResultsView:
    """What the tab shows: a status line, tables, figure paths and downloadable files."""

    message: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def outputs(self) -> list:
        return ([self.message]
                + [self.tables.get(name, pd.DataFrame()) for name in SHOWN_TABLES]
                + [self.figures.get(name) for name in SHOWN_FIGURES]
                + [self.files or None])


def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; no configured token means nobody may see results."""
    return bool(expected) and hmac.compare_digest((given or "").encode(), expected.encode())


def results_for_token(votes_source: Callable[[], pd.DataFrame], admin_token: str | None,
                      token: str | None, n_boot: int = 1000) -> ResultsView:
    """Run the analysis into a fresh temporary folder if ``token`` is the admin token."""
    if not admin_token:
        return ResultsView("Results are disabled: no admin token is configured for this app.")
    if not token_matches(token, admin_token):
        return ResultsView("Wrong or missing admin token: no results shown.")
    out_dir = Path(tempfile.mkdtemp(prefix="study-results-"))
    try:
        result = analyze(votes_source(), out_dir, n_boot=n_boot)
    except VotesError as error:
        return ResultsView(f"The votes table cannot be analysed: {error}")
    return ResultsView(result.summary_markdown,
                       {name: result.tables[name] for name in SHOWN_TABLES},
                       {name: str(path) for name, path in result.figures.items()},
                       [str(path) for path in result.files])


def render_results_tab(votes_source: Callable[[], pd.DataFrame],
                       admin_token: str | None) -> None:
    """Build the Results components inside the caller's current ``gr.Blocks`` / ``gr.Tab``."""
    with gr.Row():
        token = gr.Textbox(label="Admin token", type="password", scale=4)
        refresh = gr.Button("Refresh", variant="primary", scale=1)
    status = gr.Markdown("Enter the admin token and press Refresh.")
    tables = [gr.Dataframe(label=name.replace("_", " "), interactive=False)
              for name in SHOWN_TABLES]
    with gr.Row():
        figures = [gr.Image(label=name.replace("_", " "), type="filepath", interactive=False)
                   for name in SHOWN_FIGURES]
    files = gr.File(label="CSV, figures and summary", file_count="multiple", interactive=False)

    def on_refresh(given: str) -> list:
        return results_for_token(votes_source, admin_token, given).outputs()

    refresh.click(on_refresh, inputs=token, outputs=[status, *tables, *figures, files])
