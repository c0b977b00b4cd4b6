"""The statistics behind results/mini/edit_quality.csv."""
import numpy as np

from pipeline.train.evaluate import by_family, gain_ci


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
