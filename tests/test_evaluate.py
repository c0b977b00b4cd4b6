"""The statistics behind results/mini/edit_quality.csv."""
import numpy as np
import pytest

from pipeline.train.evaluate import by_family, carried_e2e_rows, gain_ci, summarise_e2e, write_csv


def test_gain_ci_is_paired_over_the_same_examples():
    """Scenes differ by many dB, the edit's gain by little: only a paired interval sees the gain."""
    rng = np.random.default_rng(0)
    scene = rng.normal(20, 5, 80)
    rows = [dict(family="recolour", no_edit=s, psnr=s + 0.5 + rng.normal(0, 0.3)) for s in scene]
    low, high = gain_ci(rows, "recolour")
    gain = by_family(rows, ["psnr", "no_edit"])[0]
    assert 0 < low < gain["psnr"] - gain["no_edit"] < high < 1
    assert high - low < 0.3  # an unpaired interval would be ~3 dB wide here
    assert gain_ci(rows, "all") == (low, high)


def test_e2e_rows_of_methods_not_rerun_are_carried_with_their_types(tmp_path):
    rows = [dict(seed=2000007, family="add", method=m, size="960x540", seconds=1.5, failed=f, psnr=p)
            for m, f, p in (("mobilepicasso", False, 18.3), ("ip2p-patchwise", False, 19.0), ("ip2p-direct", True, float("nan")))]
    write_csv(tmp_path / "end_to_end_runs.csv", rows)
    rerun = {("mobilepicasso", "960x540"), ("ip2p-direct", "3840x2160")}  # direct was at 960x540: kept
    carried = carried_e2e_rows(tmp_path / "end_to_end_runs.csv", rerun)
    assert [r["method"] for r in carried] == ["ip2p-patchwise", "ip2p-direct"]
    assert carried[0]["psnr"] == 19.0 and carried[0]["failed"] is False and carried[1]["failed"] is True
    summary = {r["method"]: r for r in summarise_e2e(carried)}
    assert summary["ip2p-patchwise"]["psnr"] == 19.0 and summary["ip2p-direct"]["finished"] == 0
    assert carried_e2e_rows(tmp_path / "missing.csv", set()) == []


def test_unknown_e2e_method_stops_before_any_row_is_dropped(tmp_path):
    from pipeline.train.__main__ import main

    (tmp_path / "end_to_end_runs.csv").write_text("kept\n")
    with pytest.raises(SystemExit, match="unknown .*ip2p-bicubc"):
        main(["evaluate", "--tables", "e2e", "--e2e-methods", "mobilepicasso,ip2p-bicubc",
              "--results", str(tmp_path), "--run-dir", str(tmp_path / "runs")])
    assert (tmp_path / "end_to_end_runs.csv").read_text() == "kept\n"
