"""The analysis, in the order a methods section reports it.

validate -> exclude (pre-registered rule, reported) -> per-pair sign tests -> Bradley-Terry ->
hallucination -> target summary -> quality control -> tables, figures, summary.md.
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
from study.analysis.bootstrap import participant_weights
from study.analysis.bradley_terry import bradley_terry
from study.analysis.hallucination import cochran_q_test, hallucination_rates, mcnemar_tests
from study.analysis.pairwise import pairwise_tests
from study.analysis.quality_control import quality_control
from study.analysis.summary import target_summary
from study.analysis.votes import (ExclusionRule, apply_exclusions, methods_in,
                                  participant_quality, validate_votes)

DEFAULT_TARGET = "mobilepicasso"
TABLE_FILES = {
    "pairwise_tests": "pairwise_tests.csv",
    "bradley_terry": "bradley_terry.csv",
    "hallucination": "hallucination.csv",
    "hallucination_pairwise": "hallucination_pairwise.csv",
    "hallucination_cochran_q": "hallucination_cochran_q.csv",
    "summary": "summary.csv",
    "quality_control": "quality_control.csv",
    "participants": "participants.csv",
}
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


def analyze(votes: pd.DataFrame, out_dir: str | Path, *, methods: list[str] | None = None,
            target: str = DEFAULT_TARGET, rule: ExclusionRule = ExclusionRule(),
            n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> AnalysisResult:
    """Run every analysis on a canonical votes table and write the outputs to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_votes = validate_votes(votes, methods)
    quality = participant_quality(all_votes, rule)
    kept = apply_exclusions(all_votes, quality)
    main = kept[kept["trial_kind"] == "main"]
    methods = sorted(methods) if methods is not None else methods_in(main)
    participants = sorted(main["participant_id"].unique())
    weights = participant_weights(len(participants), n_boot, seed)

    pairwise = pairwise_tests(main, methods, weights, participants, alpha)
    mcnemar = mcnemar_tests(main, methods, alpha)
    if target not in methods:
        warnings.warn(f"target method {target!r} not among {methods}: summary.csv is empty",
                      stacklevel=2)
    tables = {
        "pairwise_tests": pairwise,
        "bradley_terry": bradley_terry(main, methods, weights, participants),
        "hallucination": hallucination_rates(main, methods),
        "hallucination_pairwise": mcnemar,
        "hallucination_cochran_q": cochran_q_test(main, methods),
        "summary": target_summary(main, target, methods if target in methods else [], weights,
                                  participants, pairwise, mcnemar),
        "quality_control": quality_control(all_votes, kept, quality),
        "participants": quality,
    }
    files = []
    for name, table in tables.items():
        files.append(out_dir / TABLE_FILES[name])
        table.to_csv(files[-1], index=False)
    figures = {
        "win_rate_matrix": plots.plot_win_rate_matrix(pairwise, methods),
        "bradley_terry": plots.plot_bradley_terry(tables["bradley_terry"]),
        "hallucination": plots.plot_hallucination(tables["hallucination"]),
    }
    figure_paths = {name: plots.save(fig, out_dir / FIGURE_FILES[name])
                    for name, fig in figures.items()}
    markdown = summary_markdown(tables, methods, target, rule, n_boot, len(all_votes), len(main))
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    files += list(figure_paths.values()) + [out_dir / "summary.md"]
    return AnalysisResult(out_dir, methods, tables, figure_paths, markdown, files)


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:+.0f}%"


def _p(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.3g}"


def summary_markdown(tables: dict[str, pd.DataFrame], methods: list[str], target: str,
                     rule: ExclusionRule, n_boot: int, n_votes: int, n_main: int) -> str:
    """A short human-readable digest; the CSVs are the record."""
    participants = tables["participants"]
    excluded = participants[participants["excluded"]]
    lines = ["# Study results", "",
             f"{n_votes} votes from {len(participants)} participants; {len(excluded)} excluded "
             f"(attention pass rate < {rule.min_attention_pass:.2f}"
             + (f", median response < {rule.min_median_response_s} s"
                if rule.min_median_response_s is not None else "") + "); "
             f"{n_main} main-trial votes analysed over methods {', '.join(methods) or 'none'}. "
             f"Intervals: Wilson 95% and participant bootstrap ({n_boot} rounds).", ""]
    for _, p in excluded.iterrows():
        lines.append(f"- excluded {p['participant_id']}: {p['reason']}")
    lines += ["", f"## {target} vs baselines", ""]
    summary = tables["summary"]
    if summary.empty:
        lines.append(f"No votes compare {target!r} with another method.")
    for _, r in summary.iterrows():
        lines.append(
            f"- vs {r['baseline']}: quality preference {_pct(r['quality_pref'])} "
            f"[{_pct(r['quality_ci_low'])}, {_pct(r['quality_ci_high'])}] "
            f"(win rate {r['win_rate_target']:.2f}, Holm p {_p(r['p_holm_preference'])}); "
            f"hallucination {_pct(r['halluc_rel'])} "
            f"[{_pct(r['halluc_ci_low'])}, {_pct(r['halluc_ci_high'])}] "
            f"(McNemar Holm p {_p(r['p_holm_hallucination'])})")
    lines += ["", "## Bradley-Terry ranking", ""]
    for _, r in tables["bradley_terry"].iterrows():
        lines.append(f"{r['rank']}. {r['method']}: {r['score']:+.2f} "
                     f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]")
    lines += ["", "## Quality control", ""]
    for _, r in tables["quality_control"].iterrows():
        if r["check"] != "excluded_participant":
            lines.append(f"- {r['check']} ({r['population']}): {r['value']:.3g}"
                         + (f", p {_p(r['p_value'])}" if np.isfinite(r["p_value"]) else "")
                         + (f" ({r['detail']})" if r["detail"] else ""))
    return "\n".join(lines) + "\n"
