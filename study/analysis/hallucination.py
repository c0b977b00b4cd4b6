"""Hallucination flags: per-method rates, paired McNemar tests, Cochran's Q.

Each side of a vote carries its own 0/1 flag ("hallucinated / over-edited content"), so the flags
are a per-output judgement independent of which side won.

* Rate per method: flagged appearances / appearances, Wilson 95% interval (votes assumed
  independent).
* Method X vs Y: every vote that compared X and Y is a matched pair (same item, same rater, same
  moment), so the paired test is the exact McNemar test: a binomial test on the discordant pairs
  (only X flagged vs only Y flagged). Holm-corrected across pairs.
* All methods at once: Cochran's Q needs blocks in which every method was judged; a single vote
  shows only two methods, so the blocks are *items*: a method counts as flagged on an item when
  at least half of its appearances on that item were flagged. Only items where every method
  appeared enter the test; it is not computed with fewer than three methods, fewer than two such
  items, or when no item has discordant flags (Q is 0/0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import cochrans_q, mcnemar

from study.analysis.pairwise import holm, method_pairs, wilson_interval

RATE_COLUMNS = ["method", "n_appearances", "n_flagged", "rate", "ci_low", "ci_high"]
MCNEMAR_COLUMNS = ["method_a", "method_b", "n_pairs", "both_flagged", "only_a", "only_b",
                   "neither", "rate_a", "rate_b", "p_value", "p_holm", "significant"]
COCHRAN_COLUMNS = ["n_methods", "n_items", "statistic", "df", "p_value", "note"]


def appearances(votes: pd.DataFrame) -> pd.DataFrame:
    """Long table ``item_id, method, flag``: each vote contributes both of its sides."""
    return pd.concat([
        votes[["item_id", "method_a", "halluc_a"]].set_axis(["item_id", "method", "flag"], axis=1),
        votes[["item_id", "method_b", "halluc_b"]].set_axis(["item_id", "method", "flag"], axis=1),
    ], ignore_index=True)


def hallucination_rates(votes: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Share of each method's appearances flagged, with a Wilson 95% interval."""
    stats = appearances(votes).groupby("method")["flag"].agg(["size", "sum"])
    stats = stats.reindex(sorted(methods), fill_value=0)
    n, k = stats["size"].to_numpy(float), stats["sum"].to_numpy(float)
    low, high = wilson_interval(k, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = k / n
    return pd.DataFrame({"method": stats.index, "n_appearances": n.astype(int),
                         "n_flagged": k.astype(int), "rate": rate, "ci_low": low,
                         "ci_high": high}, columns=RATE_COLUMNS)


def mcnemar_tests(votes: pd.DataFrame, methods: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Exact McNemar test per method pair on the votes that compared them (NaN if none)."""
    rows = []
    for a, b in method_pairs(methods):
        pair = votes[(votes["method_a"] == a) & (votes["method_b"] == b)]
        fa, fb = pair["halluc_a"].to_numpy(), pair["halluc_b"].to_numpy()
        table = np.array([[np.sum((fa == 1) & (fb == 1)), np.sum((fa == 1) & (fb == 0))],
                          [np.sum((fa == 0) & (fb == 1)), np.sum((fa == 0) & (fb == 0))]])
        n = len(pair)
        p = float(mcnemar(table, exact=True).pvalue) if n else float("nan")
        rows.append([a, b, n, table[0, 0], table[0, 1], table[1, 0], table[1, 1],
                     fa.mean() if n else np.nan, fb.mean() if n else np.nan, p])
    out = pd.DataFrame(rows, columns=MCNEMAR_COLUMNS[:-2])
    out["p_holm"] = holm(out["p_value"].to_numpy(float), alpha)
    out["significant"] = out["p_holm"].fillna(1.0) < alpha
    return out[MCNEMAR_COLUMNS]


def cochran_q_test(votes: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Cochran's Q over items on which every method was judged (majority flag per item)."""
    methods = sorted(methods)
    per_item = appearances(votes).groupby(["item_id", "method"])["flag"].mean().unstack()
    per_item = per_item.reindex(columns=methods).dropna()
    n_items = len(per_item)
    if len(methods) < 3 or n_items < 2:
        note = (f"not computed: {len(methods)} methods, {n_items} items judged for every method "
                "(needs >= 3 methods and >= 2 items)")
        return pd.DataFrame([[len(methods), n_items, np.nan, np.nan, np.nan, note]],
                            columns=COCHRAN_COLUMNS)
    flags = (per_item.to_numpy() >= 0.5).astype(int)
    if not (flags.min(axis=1) != flags.max(axis=1)).any():
        return pd.DataFrame([[len(methods), n_items, np.nan, len(methods) - 1, np.nan,
                              "not computed: no item with discordant flags"]],
                            columns=COCHRAN_COLUMNS)
    result = cochrans_q(flags)
    return pd.DataFrame([[len(methods), n_items, float(result.statistic), int(result.df),
                          float(result.pvalue), "items judged for every method, flag = flagged in >= half"]],
                        columns=COCHRAN_COLUMNS)
