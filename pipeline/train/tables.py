"""The evaluation tables' plumbing: CSV rows out, paired confidence intervals."""
from __future__ import annotations

import csv
from pathlib import Path

from scipy import stats


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})


def read_csv(path: Path, ints: tuple[str, ...] = (), floats: tuple[str, ...] = ()) -> list[dict]:
    """Rows written by `write_csv` (none if the file is absent), with the named columns converted
    back to numbers: what a resumed evaluation starts from."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: int(r[k]) for k in ints}, **{k: float(r[k]) for k in floats})
    return rows


def paired_ci(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float]:
    """Paired t confidence interval of mean(a - b): a and b measured on the same examples."""
    ci = stats.ttest_rel(a, b).confidence_interval(level)
    return float(ci.low), float(ci.high)
