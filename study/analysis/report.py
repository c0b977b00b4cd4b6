"""The analysis, in the order a methods section reports it.

validate -> exclude (pre-registered rule, reported) -> per-pair clustered tests -> Bradley-Terry
-> hallucination -> target summary -> power -> quality control -> tables, figures, summary.md.
Only main trials of kept participants enter the preference and hallucination analyses; attention
trials feed the exclusion rule and repeat trials the test-retest check.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis import plots
from study.analysis.bradley_terry import bradley_terry, count_matrices
from study.analysis.hallucination import hallucination_rates, mcnemar_tests
from study.analysis.pairwise import pairwise_tests
from study.analysis.power import achieved_power_table
from study.analysis.quality_control import quality_control
from study.analysis.summary import target_summary
from study.analysis.votes import (ExclusionRule, VotesError, apply_exclusions, methods_in,
                                  normalise_method, participant_quality, validate_votes)

DEFAULT_TARGET = "mobilepicasso"
TABLE_FILES = {
    "pairwise_tests": "pairwise_tests.csv",
    "bradley_terry": "bradley_terry.csv",
    "vote_count_matrix": "vote_count_matrix.csv",
    "predicted_win_matrix": "predicted_win_matrix.csv",
    "hallucination": "hallucination.csv",
    "hallucination_pairwise": "hallucination_pairwise.csv",
    "summary": "summary.csv",
    "power": "power.csv",
    "quality_control": "quality_control.csv",
    "participants": "participants.csv",
}
MATRIX_TABLES = ("vote_count_matrix", "predicted_win_matrix")
"""Written with their row labels (``row_over_column``)."""
FIGURE_FILES = {
    "win_rate_matrix": "win_rate_matrix.png",
    "bradley_terry": "bradley_terry.png",
    "hallucination": "hallucination.png",
}


@dataclass
class AnalysisResult:
    """Everything ``analyze`` computed and wrote (tables by name, file paths, the Markdown)."""

    out_dir: Path
    methods: list[str]
    tables: dict[str, pd.DataFrame]
    figures: dict[str, Path]
    summary_markdown: str
    files: list[Path] = field(default_factory=list)


def check_settings(alpha: float, n_boot: int) -> None:
    """Refuse settings that make every test or interval meaningless, in one sentence."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise VotesError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise VotesError(f"bootstrap rounds must be a positive integer, got {n_boot!r}")


def analyze(votes: pd.DataFrame, out_dir: str | Path, *, methods: list[str] | None = None,
            target: str = DEFAULT_TARGET, rule: ExclusionRule = ExclusionRule(),
            n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> AnalysisResult:
    """Run every analysis on a canonical votes table and write the outputs to ``out_dir``."""
    check_settings(alpha, n_boot)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = normalise_method(target)
    all_votes = validate_votes(votes, methods)
    quality = participant_quality(all_votes, rule)
    kept = apply_exclusions(all_votes, quality)
    main = kept[kept["trial_kind"] == "main"]
    methods = (sorted({normalise_method(m) for m in methods}) if methods is not None
               else methods_in(main))
    n_people = int(main["participant_id"].nunique())
    if 0 < n_people < 2:
        warnings.warn(f"only {n_people} participant among the kept main votes: rater-clustered "
                      "tests and intervals are undefined (NaN), not zero-width", stacklevel=2)

    pairwise = pairwise_tests(main, methods, alpha)
    mcnemar = mcnemar_tests(main, methods, alpha)
    bt = bradley_terry(main, methods, alpha, n_draws=n_boot, seed=seed)
    counts, predicted = count_matrices(main, bt, methods)
    if target not in methods:
        warnings.warn(f"target method {target!r} not among {methods}: summary.csv is empty",
                      stacklevel=2)
    n_excluded = int(quality["excluded"].sum()) if len(quality) else 0
    tables = {
        "pairwise_tests": pairwise,
        "bradley_terry": bt,
        "vote_count_matrix": counts,
        "predicted_win_matrix": predicted,
        "hallucination": hallucination_rates(main, methods, alpha),
        "hallucination_pairwise": mcnemar,
        "summary": target_summary(main, target, methods if target in methods else [],
                                  pairwise, mcnemar, alpha,
                                  participants_kept=len(quality) - n_excluded,
                                  participants_excluded=n_excluded),
        "power": achieved_power_table(pairwise, alpha),
        "quality_control": quality_control(all_votes, kept, quality, n_boot, seed, alpha),
        "participants": quality,
    }
    files = []
    for name, table in tables.items():
        files.append(out_dir / TABLE_FILES[name])
        table.to_csv(files[-1], index=name in MATRIX_TABLES)
    figures = {
        "win_rate_matrix": plots.plot_win_rate_matrix(pairwise, methods),
        "bradley_terry": plots.plot_bradley_terry(bt),
        "hallucination": plots.plot_hallucination(tables["hallucination"]),
    }
    figure_paths = {name: plots.save(fig, out_dir / FIGURE_FILES[name])
                    for name, fig in figures.items()}
    markdown = summary_markdown(tables, methods, target, rule, n_boot, len(all_votes), len(main),
                                alpha)
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    files += list(figure_paths.values()) + [out_dir / "summary.md"]
    return AnalysisResult(out_dir, methods, tables, figure_paths, markdown, files)


def _pts(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:+.0f} pts"


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:+.0f}%"


def _p(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.3g}"


def _num(x: float, fmt: str = "+.2f") -> str:
    return "n/a" if not np.isfinite(x) else format(x, fmt)


def summary_markdown(tables: dict[str, pd.DataFrame], methods: list[str], target: str,
                     rule: ExclusionRule, n_boot: int, n_votes: int, n_main: int,
                     alpha: float = 0.05) -> str:
    """A short human-readable digest; the CSVs are the record."""
    participants = tables["participants"]
    excluded = participants[participants["excluded"]] if len(participants) else participants
    no_attention = (int((participants["attention_trials"] == 0).sum())
                    if len(participants) else 0)
    lines = ["# Study results", "",
             f"{n_votes} votes from {len(participants)} participants; **{len(excluded)} "
             f"excluded**, {len(participants) - len(excluded)} kept ({no_attention} without a "
             f"scorable attention trial); rule: attention pass rate < "
             f"{rule.min_attention_pass:.2f}"
             + (f", median response < {rule.min_median_response_s} s"
                if rule.min_median_response_s is not None else "") + ". "
             f"{n_main} main-trial votes analysed over methods {', '.join(methods) or 'none'}.",
             "",
             f"Tests and intervals account for raters and images: two-way (participant x item) "
             f"cluster-robust Wald t tests and 95% intervals, Holm-corrected at family-wise "
             f"alpha {alpha}; ties are set aside for win rates and Bradley-Terry. Resampling "
             f"({n_boot} rounds): rank intervals, Krippendorff's alpha. Columns `naive_*` assume "
             f"independent votes and are shown for comparison only.", ""]
    for _, p in excluded.iterrows():
        lines.append(f"- excluded {p['participant_id']}: {p['reason']}")
    lines += ["", f"## {target} vs baselines", ""]
    summary = tables["summary"]
    if summary.empty:
        lines.append(f"No votes compare {target!r} with another method.")
    for _, r in summary.iterrows():
        lines.append(
            f"- vs {r['baseline']}: win rate {_num(r['win_rate_target'], '.2f')} "
            f"[{_num(r['win_rate_ci_low'], '.2f')}, {_num(r['win_rate_ci_high'], '.2f')}], "
            f"net preference {_pts(r['quality_pref'])} "
            f"[{_pts(r['quality_ci_low'])}, {_pts(r['quality_ci_high'])}] "
            f"(Holm p {_p(r['p_holm_preference'])}; {r['wins_target']}:{r['wins_baseline']} "
            f"decisive, {r['ties']} ties, {r['n_participants']} raters, {r['n_items']} images); "
            f"hallucination {_pct(r['halluc_rel'])} "
            f"[{_pct(r['halluc_ci_low'])}, {_pct(r['halluc_ci_high'])}] relative, "
            f"{_pts(r['halluc_diff'])} absolute (clustered McNemar Holm p "
            f"{_p(r['p_holm_hallucination'])})")
    lines += ["", "## Bradley-Terry ranking (decisive votes)", ""]
    for _, r in tables["bradley_terry"].iterrows():
        rank = "-" if not np.isfinite(r["rank"]) else int(r["rank"])
        lines.append(f"{rank}. {r['method']}: {_num(r['score'])} [{_num(r['ci_low'])}, "
                     f"{_num(r['ci_high'])}], Elo {_num(r['elo'], '.0f')}, rank interval "
                     f"{_num(r['rank_ci_low'], '.0f')}-{_num(r['rank_ci_high'], '.0f')}"
                     + (f" ({r['note']})" if r["note"] else ""))
    lines += ["", "## Sensitivity (power)", ""]
    for _, r in tables["power"].iterrows():
        lines.append(f"- {r['method_a']} vs {r['method_b']}: {r['decisive_votes']} decisive votes,"
                     f" design effect {_num(r['design_effect'], '.2f')}, effective n "
                     f"{_num(r['effective_n'], '.0f')}: 80% power to detect a win rate of "
                     f"{_num(r['detectable_win_rate'], '.3f')} at alpha "
                     f"{_num(r['alpha_per_pair'], '.4f')} (Holm's first step)")
    lines += ["", "## Quality control", ""]
    for _, r in tables["quality_control"].iterrows():
        if r["check"] != "excluded_participant":
            ci = (f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
                  if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]) else "")
            lines.append(f"- {r['check']} ({r['population']}): {_num(r['value'], '.3g')}{ci}"
                         + (f", p {_p(r['p_value'])}" if np.isfinite(r["p_value"]) else "")
                         + (f" ({r['detail']})" if r["detail"] else ""))
    return "\n".join(lines) + "\n"
