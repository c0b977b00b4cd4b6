"""PNG figures for results/: cost, quality and tiling. Every figure is drawn from a CSV next to it."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_color(method: str) -> str:
    """One colour per method in every figure (by its place in the registry)."""
    from pipeline.methods import METHODS

    names = list(METHODS)
    return f"C{names.index(method) % 10}" if method in names else "C9"


def _grouped(ax, table: pd.DataFrame, sizes: Sequence[str], methods: Sequence[str], value: str,
             low: str | None = None, high: str | None = None, derived: str | None = None) -> None:
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(sizes))
    for i, m in enumerate(methods):
        vals, errs, hatch_vals = [], [[], []], []
        for s in sizes:
            row = table[(table["size"] == s) & (table["method"] == m)]
            v = row[value].iloc[0] if len(row) else math.nan
            d = row[derived].iloc[0] if derived and len(row) and derived in row else math.nan
            vals.append(v)
            hatch_vals.append(d if not np.isfinite(v) else math.nan)
            lo = row[low].iloc[0] if low and len(row) else v
            hi = row[high].iloc[0] if high and len(row) else v
            errs[0].append(max(v - lo, 0) if np.isfinite(v) else 0)
            errs[1].append(max(hi - v, 0) if np.isfinite(v) else 0)
        color = method_color(m)
        ax.bar(x + i * width, vals, width, label=m, yerr=errs if low else None, capsize=2, color=color)
        if derived and any(np.isfinite(hatch_vals)):
            ax.bar(x + i * width, hatch_vals, width, fill=False, hatch="//", edgecolor=color)
    ax.set_xticks(x + 0.4 - width / 2, sizes)


def _save(fig, path: Path, title: str | None = None, legend_space: float = 0.0) -> Path:
    """Title, lay out (leaving `legend_space` at the bottom for a figure legend), write and close."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_space, 1, 1))
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _legend(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=len(seen), fontsize=8, frameon=False)


def cost_figures(cost: pd.DataFrame, sizes: Sequence[str], methods: Sequence[str], out: Path, title: str) -> list[Path]:
    plt = _plt()
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    _grouped(axes[0], cost, sizes, methods, "seconds_median", "seconds_min", "seconds_max", derived="derived_seconds")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("seconds per edit (median, min-max; hatched = derived)")
    _grouped(axes[1], cost, sizes, methods, "peak_mib_median", "peak_mib_min", "peak_mib_max")
    axes[1].set_ylabel("peak memory, MiB (process VmHWM)")
    cost = cost.assign(all_gflops=cost["unet_gflops"].fillna(0) + cost["other_gflops"].fillna(0))
    cost.loc[cost["status"].isin(["failed", "derived"]), "all_gflops"] = math.nan
    _grouped(axes[2], cost, sizes, methods, "all_gflops", derived="derived_unet_gflops")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("GFLOPs per edit (U-Net; + Real-ESRGAN)")
    for ax in axes:
        ax.set_xlabel("output size (16:9, long side)")
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes[0])
    paths.append(_save(fig, out / "cost.png", title, legend_space=0.06))

    stages = [c for c in cost.columns if c.endswith("_s_median") and c != "seconds_median"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.5), squeeze=False)
    for ax, s in zip(axes[0], sizes):
        sub = cost[(cost["size"] == s) & (cost["status"] != "failed")]
        bottom = np.zeros(len(sub))
        for st in stages:
            v = sub[st].fillna(0).to_numpy(float) if st in sub else np.zeros(len(sub))
            ax.bar(sub["method"], v, bottom=bottom, label=st.replace("_s_median", ""))
            bottom += v
        ax.set_title(f"{s}: seconds by stage (median)", fontsize=9)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    axes[0][0].legend(fontsize=7)
    paths.append(_save(fig, out / "stages.png"))
    return paths


def quality_figure(head: pd.DataFrame, sizes: Sequence[str], baselines: Sequence[str], labels: dict, out: Path,
                   title: str) -> list[Path]:
    """Paired differences only: mobilepicasso minus each baseline on the same test images, mean and
    95% CI (headline.csv's `*_diff` columns); above zero = mobilepicasso's value is higher."""
    plt = _plt()
    keys = {"psnr": "quality", "artifact_ratio": "hallucination"}
    cols = [c for c in ("psnr", "ssim", "psnr_unedited", "edit_mae", "artifact_ratio", "artifact_prob",
                        "lr_consistency", "brisque") if f"{keys.get(c, c)}_diff" in head]
    if head.empty or not cols:
        return []
    table = head.rename(columns={"baseline": "method"})
    n = len(cols)
    fig, axes = plt.subplots(2, math.ceil(n / 2), figsize=(4.2 * math.ceil(n / 2), 8), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        k = keys.get(c, c)
        q = table.assign(lo=table[f"{k}_diff_ci_low"].fillna(table[f"{k}_diff"]),
                         hi=table[f"{k}_diff_ci_high"].fillna(table[f"{k}_diff"]))
        _grouped(ax, q, sizes, baselines, f"{k}_diff", "lo", "hi")
        ax.axhline(0.0, color="k", lw=0.8)
        name, higher = labels[c]
        ax.set_title(f"{name}: mobilepicasso - baseline\n(> 0 = mobilepicasso {'better' if higher else 'worse'})",
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    _legend(fig, axes[0][0])
    return [_save(fig, out / "quality.png", title + " (paired by test image: mean difference, 95% CI)",
                  legend_space=0.05)]


def seam_figure(quality: pd.DataFrame, sizes: Sequence[str], methods: Sequence[str], out: Path, title: str) -> list[Path]:
    plt = _plt()
    if quality.empty or "seam_ratio_acpt_grid" not in quality:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    q = quality.copy()
    for ax, c, name in ((axes[0], "seam_ratio", "at each method's own tile boundaries"),
                        (axes[1], "seam_ratio_acpt_grid", "at mobilepicasso's ACPT core boundaries (control)")):
        if c not in q:
            ax.axis("off")
            continue
        keep = [m for m in methods if q[(q["method"] == m)][c].notna().any()]
        _grouped(ax, q.assign(lo=q[c] - q.get(f"{c}_sd", 0).fillna(0), hi=q[c] + q.get(f"{c}_sd", 0).fillna(0)),
                 sizes, keep, c, "lo", "hi")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(f"seam visibility {name}\n(boundary / elsewhere mean |step|; 1 = invisible; "
                     "mean ± sd over the common test images)", fontsize=9)
        ax.legend(fontsize=7)
    return [_save(fig, out / "seams.png", title)]


def tiles_figures(limits: pd.DataFrame, costs: pd.DataFrame, derived: pd.DataFrame, sizes: Sequence[str], out: Path,
                  title: str) -> list[Path]:
    plt = _plt()
    paths = []
    ok = costs[costs["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(ok["tile"], ok["seconds_per_tile"] * 1e3, "o-")
    axes[0].set_ylabel("latency per tile, ms")
    axes[1].plot(ok["tile"], ok["peak_mib"], "o-", color="C1")
    axes[1].set_ylabel("peak memory rise per batch, MiB")
    axes[2].plot(ok["tile"], ok["us_per_latent_px"], "o-", color="C2")
    axes[2].set_ylabel("latency per latent pixel, µs")
    for ax, t in zip(axes, ("(b) latency vs tile size", "(c) memory vs tile size", "efficiency vs tile size")):
        ax.set_xlabel("tile size (latent px, square)")
        ax.set_title(t, fontsize=9)
        ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "tile_cost.png", title))

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    default = limits[limits["default_tile"]]
    modes = list(dict.fromkeys(default["what"]))
    x = np.arange(len(sizes))
    width = 0.8 / max(len(modes), 1)
    for i, what in enumerate(modes):
        v = [default[(default["size"] == s) & (default["what"] == what)]["limit_ratio"].max() for s in sizes]
        axes[0].bar(x + i * width, v, width, label=what)
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_xticks(x + 0.4 - width / 2, sizes)
    axes[0].set_ylabel("evaluated latent px / output latent px")
    axes[0].set_title("limit ratio at the default tile (1 = one pass, no overlap)", fontsize=9)
    axes[0].legend(fontsize=7)
    up = limits[limits["what"].str.startswith("upscaler")]
    big = sizes[-1]
    for what in dict.fromkeys(up["what"]):
        sub = up[(up["size"] == big) & (up["what"] == what)]
        axes[1].plot(sub["tile"], sub["limit_ratio"], "o-", label=what)
    axes[1].set_xlabel("tile size (latent px)")
    axes[1].set_ylabel("limit ratio")
    axes[1].set_title(f"limit ratio against tile size at {big}", fontsize=9)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "limit_ratio.png", title))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    methods = list(dict.fromkeys(derived["method"]))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        sub = derived[derived["method"] == m].set_index("size").reindex(sizes)
        bottom = np.zeros(len(sizes))
        for j, st in enumerate(("edit_s_derived", "upscale_s_derived", "decode_s_derived")):
            v = sub[st].fillna(0).to_numpy(float)
            ax.bar(x + i * width, v, width, bottom=bottom, color=f"C{j}", alpha=0.35 + 0.2 * i,
                   label=st.replace("_s_derived", "") if i == 0 else None)
            bottom += v
        meas = sub["total_s_measured"].to_numpy(float)
        ax.plot(x + i * width, meas, "kD", ms=5, label="measured total" if i == 0 else None)
        for xi, tot in zip(x + i * width, bottom):
            ax.text(xi, tot, m.replace("tiled-", ""), rotation=90, fontsize=6, ha="center", va="bottom")
    ax.set_xticks(x + 0.4 - width / 2, sizes)
    ax.set_yscale("log")
    stage_vals = derived[["edit_s_derived", "upscale_s_derived", "decode_s_derived"]].to_numpy(float)
    positive = stage_vals[np.isfinite(stage_vals) & (stage_vals > 0)]
    if positive.size:
        ax.set_ylim(positive.min() / 3, np.nanmax(derived["total_s_derived"].to_numpy(float)) * 8)
    ax.set_ylabel("seconds per edit")
    ax.set_title("derived cost (tiles x measured per-tile cost) by stage; diamonds: measured runs", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(fig, out / "derived_cost.png", title))
    return paths
