"""Harness subcommands of ``python -m study``: prepare, serve, simulate, export, admin."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_DB = "study.db"


def _config(args) -> "StudyConfig | None":
    from study.config import StudyConfig

    overrides = {}
    if getattr(args, "config", None):
        overrides.update(StudyConfig.from_json_file(args.config).to_dict())
    for name in ("trials_per_participant", "fast_threshold_s", "max_votes_per_cell", "completion_code",
                 "new_participants_burst", "new_participants_per_minute"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return StudyConfig.from_dict(overrides) if overrides else None


def cmd_prepare(args) -> int:
    from study.stimuli import dry_run_renderer, parse_shard, pipeline_renderer, prepare, read_items

    render = dry_run_renderer if args.dry_run else pipeline_renderer(args.models)
    summary = prepare(read_items(args.items), [m.strip() for m in args.methods.split(",") if m.strip()],
                      args.size, args.out, args.db, render=render,
                      seed=args.seed, shard=parse_shard(args.shard), progress=not args.quiet)
    print(f"rendered {summary.rendered}, skipped {summary.skipped} (already done), "
          f"failed {summary.failed}, {summary.seconds:.1f} s")
    for item_id, methods in summary.identical:
        print(f"identical outputs for item {item_id}: {', '.join(methods)} (never shown as a pair)")
    return 0


def cmd_serve(args) -> int:
    from study.server import serve
    from study.service import StudyService

    service = StudyService(args.db, args.stimuli, _config(args))
    if not service.catalog.cells:
        print(f"warning: no prepared stimuli in {args.db} / {args.stimuli}; run `prepare` first",
              file=sys.stderr)
    print(f"study at http://{args.host}:{args.port}/?pid=<participant id>  (JSON API under /study/api)")
    serve(service, args.host, args.port, args.admin_token)
    return 0


def cmd_simulate(args) -> int:
    from study.simulate import HTTPTransport, InProcessTransport, oracle_from_db, parse_rates, parse_truth, simulate

    oracle = oracle_from_db(args.db)
    if args.url:
        transport = HTTPTransport(args.url)
    else:
        from study.service import StudyService

        transport = InProcessTransport(StudyService(args.db, args.stimuli, _config(args)))
    report = simulate(transport, oracle, args.participants, parse_truth(args.truth),
                      parse_rates(args.halluc, args.halluc_default), careless=args.careless,
                      think_s=args.think_ms / 1000, seed=args.seed, prefix=args.prefix,
                      double_submit=args.double_submit)
    from study.db import stored_votes

    stored = stored_votes(args.db, report.acked_trials)
    lost = len(set(report.acked_trials)) - stored
    print(f"participants {report.participants} (completed {report.completed}, no work {report.no_work}), "
          f"votes acknowledged {report.acknowledged}, stored {stored}, lost {lost}, "
          f"duplicate submissions refused {report.duplicates}, wall {report.wall_s:.1f} s, "
          f"{report.votes_per_s:.1f} votes/s, vote latency p50 {1000 * report.vote_latency_quantile(0.5):.0f} ms "
          f"p95 {1000 * report.vote_latency_quantile(0.95):.0f} ms, errors {len(report.errors)}")
    for error in report.errors[:10]:
        print("  error:", error, file=sys.stderr)
    return 0 if lost == 0 and not report.errors else 1


def cmd_export(args) -> int:
    from study.db import votes_frame

    frame = votes_frame(args.db)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} votes to {args.out}")
    return 0


def cmd_admin(args) -> int:
    import pandas as pd

    from study.service import StudyService

    service = StudyService(args.db, args.stimuli or ".", None)
    try:
        frame = {"progress": service.progress, "participants": service.participants,
                 "exclusions": service.exclusions, "identical": service.identical_pairs}[args.report]()
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(frame.to_string(index=False) if len(frame) else "(none)")
        if args.report == "exclusions":
            print(f"\nrule: {service.config.exclusion_rule()}")
    finally:
        service.close()
    return 0


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON file with StudyConfig fields")
    p.add_argument("--trials", dest="trials_per_participant", type=int, help="trials per participant")
    p.add_argument("--fast-threshold", dest="fast_threshold_s", type=float, help="flag answers faster (s)")
    p.add_argument("--max-votes-per-cell", type=int, help="cap per (item, method pair)")
    p.add_argument("--completion-code", help="fixed completion code (default: one per participant)")
    p.add_argument("--new-participants-burst", type=int,
                   help="new participant ids one client address may create at once (0: unlimited)")
    p.add_argument("--new-participants-per-minute", type=float,
                   help="... and per minute after the burst")


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="render every method on every item into blinded stimuli")
    p.add_argument("--items", default=str(Path(__file__).parent / "items.csv"))
    p.add_argument("--methods", default="mobilepicasso,ip2p-direct,ip2p-realesrgan,tiled-overlap")
    p.add_argument("--size", default="2048", help='"4k", "WxH" or the long side in pixels')
    p.add_argument("--models", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="stimuli")
    p.add_argument("--db", default=DEFAULT_DB, help="SQLAlchemy URL or SQLite file")
    p.add_argument("--shard", help="k/n: this process renders every n-th item starting at k")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="placeholder stimuli (tinted source copies) to rehearse the harness without the pipeline")
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser("serve", help="serve the participant flow and the JSON API")
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--stimuli", default="stimuli")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7861, help="default 7861: the demo app (`python app.py`) has 7860")
    p.add_argument("--admin-token", default=os.environ.get("STUDY_ADMIN_TOKEN"))
    _add_config_options(p)
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("simulate", help="synthetic participants (and load test)")
    p.add_argument("--url", help="server base URL; in-process when omitted")
    p.add_argument("--db", default=DEFAULT_DB, help="the study database (truth oracle; in-process store)")
    p.add_argument("--stimuli", default="stimuli")
    p.add_argument("--participants", type=int, default=46)
    p.add_argument("--truth", action="append", help='"a>b:0.7" (repeatable); other pairs 0.5')
    p.add_argument("--halluc", action="append", help='"method:rate" (repeatable)')
    p.add_argument("--halluc-default", type=float, default=0.1)
    p.add_argument("--careless", type=float, default=0.05, help="fraction answering at random")
    p.add_argument("--think-ms", type=float, default=0.0)
    p.add_argument("--double-submit", type=float, default=0.0, help="probability of re-sending a vote")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="sim")
    _add_config_options(p)
    p.set_defaults(func=cmd_simulate)

    p = subparsers.add_parser("export", help="write the canonical votes table as CSV")
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--out", default="results/study/votes.csv")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("admin", help="progress, participants, exclusions")
    p.add_argument("report", choices=["progress", "participants", "exclusions", "identical"])
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--stimuli", default="stimuli")
    p.set_defaults(func=cmd_admin)

    from study import bench

    bench.register(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Harness commands only (``python -m study`` adds the analysis commands)."""
    parser = argparse.ArgumentParser(prog="python -m study.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
