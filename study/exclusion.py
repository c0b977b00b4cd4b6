"""The pre-registered participant exclusion rule: the one definition the server, the export and
the analysis all apply.

Pure Python and pandas (no database, no server), so ``study.analysis`` can apply it to an exported
votes CSV alone. A participant is excluded with all their votes when

* their share of passed attention checks (answer == the intact side) is below ``min_attention_pass``
  (the schedule gives every participant at least ``StudyConfig.min_attention_checks`` of them, so
  with the defaults, 5 checks and 0.8, failing 2 of 5 excludes; longer studies get more checks), or
* at least ``max_fast_share`` of their answers took less than ``fast_threshold_s``, measured by the
  participant's own client (from the trial appearing on screen to the click: ``latency_ms`` of the
  export; the server-side time, which includes network and server queueing, only when a client
  did not report one), or
* optionally, their median response time is below ``min_median_response_s`` (off by default).

Repeated-pair inconsistency is reported, not used. Excluded votes stay in the export (``excluded=1``
and the reason).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ExclusionRule:
    min_attention_pass: float = 0.8
    min_median_response_s: float | None = None
    fast_threshold_s: float = 1.5
    max_fast_share: float = 0.5

    def describe(self) -> str:
        text = (f"exclude all votes of a participant whose share of passed attention checks "
                f"(answer == the intact side) is below {self.min_attention_pass:g}, or who answers "
                f">= {self.max_fast_share:.0%} of trials in < {self.fast_threshold_s:g} s "
                f"(response time measured by the participant's client)")
        if self.min_median_response_s is not None:
            text += f", or whose median response time is below {self.min_median_response_s:g} s"
        return text + ("; repeated-pair inconsistency is reported, not used for exclusion; "
                       "excluded votes stay in the export with excluded=1")

    def reason(self, n_votes: int, attention_trials: int, attention_passed: int, n_fast: int,
               median_response_s: float | None = None) -> str:
        """Why the participant is excluded ("" when kept)."""
        why = []
        if attention_trials and attention_passed / attention_trials < self.min_attention_pass:
            why.append(f"passed {attention_passed}/{attention_trials} attention checks "
                       f"(< {self.min_attention_pass:g})")
        if n_votes and n_fast / n_votes >= self.max_fast_share:
            why.append(f"{n_fast}/{n_votes} answers faster than {self.fast_threshold_s:g} s")
        if (self.min_median_response_s is not None and median_response_s is not None
                and np.isfinite(median_response_s) and median_response_s < self.min_median_response_s):
            why.append(f"median response {median_response_s:.1f} s < {self.min_median_response_s:g} s")
        return "; ".join(why)

    def is_fast(self, latency_ms) -> "bool | pd.Series":
        return latency_ms < self.fast_threshold_s * 1000


def participant_verdicts(votes: pd.DataFrame, rule: ExclusionRule) -> pd.DataFrame:
    """The rule on a votes table with the export's columns (``participant_id, trial_kind, choice,
    expected_choice, latency_ms``; without ``latency_ms``, ``response_s`` in seconds): one row per
    participant with the counts and the reason."""
    columns = ["participant_id", "n_votes", "attention_trials", "attention_passed", "n_fast",
               "median_response_s", "excluded", "reason"]
    if votes.empty:
        return pd.DataFrame(columns=columns)
    expected = votes.get("expected_choice", pd.Series("", index=votes.index)).fillna("").astype(str).str.strip().str.lower()
    kind = votes["trial_kind"].astype(str).str.strip().str.lower()
    choice = votes["choice"].astype(str).str.strip().str.lower()
    if "latency_ms" in votes:
        latency = pd.to_numeric(votes["latency_ms"], errors="coerce")
    else:
        latency = pd.to_numeric(votes.get("response_s", pd.Series(np.nan, index=votes.index)),
                                errors="coerce") * 1000
    frame = pd.DataFrame({"participant_id": votes["participant_id"].astype(str),
                          "attention": (kind == "attention") & (expected != ""),
                          "passed": (kind == "attention") & (expected != "") & (choice == expected),
                          "fast": rule.is_fast(latency).fillna(False).astype(bool),
                          "response_s": latency / 1000})
    table = frame.groupby("participant_id").agg(
        n_votes=("fast", "size"), attention_trials=("attention", "sum"),
        attention_passed=("passed", "sum"), n_fast=("fast", "sum"),
        median_response_s=("response_s", "median")).reset_index()
    table["reason"] = [rule.reason(int(r.n_votes), int(r.attention_trials), int(r.attention_passed),
                                   int(r.n_fast), r.median_response_s) for r in table.itertuples()]
    table["excluded"] = table["reason"] != ""
    return table[columns]
