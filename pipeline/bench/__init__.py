"""The benchmark: cost, tiling and quality of every method, measured on this machine.

    python -m pipeline bench --methods all --sizes 1024,2048,4k --models mini --repeats 3 --out results/bench
    python -m pipeline bench --suite direct --models mini --out results/bench
    python -m pipeline bench --suite tiles --models sd15-arch --out results/tiles

- `runs`: which (method, size, test image) runs a benchmark makes: every method on the same images.
- `worker`: one run in its own process (`python -m pipeline.bench.worker`), so peak memory is
  that run's alone; it prints nothing and writes one JSON file.
- `runner`: launches workers with a per-run timeout; a crash, a kill or a timeout is a row.
- `metrics`: PSNR/SSIM, preservation, edit-region error, artifact ratio (detector M),
  LR-consistency, BRISQUE, seam visibility, paired difference (t interval) and bootstrap, pixel digests.
- `tables`: cost and quality tables (the common images of each size), paired headline comparisons
  against `mobilepicasso`, byte-identical outputs.
- `direct`: ip2p-direct's time estimate calibrated from U-Net calls at several sizes, checked
  against measured direct edits.
- `tiles`: the tiling suite (limit ratios, per-tile cost against tile size, ACPT's tile choice,
  derived full-size cost from tile counts x measured per-tile cost).
- `plots`, `readme`: PNG figures and the generated `results/README.md`.
"""
