"""Every trainer runs a few steps end to end and the folder reloads as a trained set (CI smoke run)."""
from pipeline import mini_architecture as arch
from pipeline.model_sets import BUNDLED, SetInfo, load_local_set, save_local_set
from pipeline.train.__main__ import main


def test_train_all_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_QUIET", "1")
    monkeypatch.setenv("TRAIN_THREADS", "1")
    out = tmp_path / "set"
    save_local_set(arch.build_untrained(BUNDLED / "mini" / "tokenizer"), SetInfo(name="smoke", description="smoke"),
                   out, weights=False)
    assert not load_local_set(out).info.trained
    main(["all", "--out", str(out), "--run-dir", str(tmp_path / "runs"), "--steps", "2", "--batch-size", "2",
          "--pool", "12", "--minutes", "0", "--checkpoint-every", "1"])
    models = load_local_set(out)
    assert models.info.trained, models.info.untrained
    assert (tmp_path / "runs" / "edit-full" / "ckpt.pt").is_file()


def test_resume_continues_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_QUIET", "1")
    monkeypatch.setenv("TRAIN_THREADS", "1")
    out = tmp_path / "set"
    save_local_set(arch.build_untrained(BUNDLED / "mini" / "tokenizer"), SetInfo(name="smoke", description="smoke"),
                   out, weights=False)
    run = str(tmp_path / "runs")
    main(["detector", "--out", str(out), "--run-dir", run, "--steps", "2", "--batch-size", "2", "--minutes", "0"])
    from pipeline.train.common import Checkpoint

    assert Checkpoint(run, "detector").load()[0] == 2
    main(["detector", "--out", str(out), "--run-dir", run, "--steps", "3", "--batch-size", "2", "--minutes", "0", "--resume"])
    assert Checkpoint(run, "detector").load()[0] == 3


def test_all_passes_user_options_to_every_step():
    """`all` runs its steps as child processes: each must get the user's options, and the edit
    fine-tune its own share of steps and its starting checkpoint."""
    from pipeline.train.__main__ import CHAINS, parser, step_argv

    argv = ["all", "--out", "o", "--run-dir", "r", "--steps", "60", "--minutes", "30", "--resume"]
    args = parser().parse_args(argv)
    steps = [s for chain in CHAINS for s in chain]
    assert set(steps) == {"detector", "projector", "upscaler", "edit-base", "edit-full", "edit_region", "look"}
    for step in steps:
        child = parser().parse_args(step_argv(step, argv, args))
        assert (child.out, child.run_dir, child.resume) == ("o", "r", True)
    base = parser().parse_args(step_argv("edit-base", argv, args))
    full = parser().parse_args(step_argv("edit-full", argv, args))
    assert (base.part, base.variant, base.steps, base.minutes) == ("edit", "plain", 60, 30)
    assert (full.part, full.variant, full.steps, full.minutes) == ("edit", "full", 10, 5)
    assert full.init_from.replace("\\", "/") == "r/edit/ckpt.pt"
