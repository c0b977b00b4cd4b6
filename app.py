"""MobilePicasso as a Gradio app (the Hugging Face Space): Edit, Study and Results tabs.

    python app.py                                   # http://127.0.0.1:7860, bundled `mini` set, no network
    MOBILEPICASSO_MODELS=sd15 python app.py         # the Hub set (pretrained SD1.5 IP2P + x4 upscaler; GPU)
    python app.py --study-db study.db --stimuli stimuli/    # after `python -m study prepare ...`

The Gradio app is mounted on a FastAPI app next to the study's JSON API (`/study/api/...`),
exactly as `python -m study serve` does, so the Space and the standalone study server agree.
"""
from __future__ import annotations

import os

for _key, _value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(_key, _value)  # before gradio is imported: it reads them at import time

import argparse
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from demo.edit_tab import DEFAULT_SIZE, SIZES, render_edit_tab

TITLE = "Instruction-based image editing at 4K"  # page title: no method names (the study is blinded)
CSS = """
#edit-results .prose h3 { margin: 0.2em 0; }
#edit-results small { line-height: 1.3; }
/* result tiles: one grid, every tile the same width whatever the count */
#edit-results { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 12px; }
#edit-results > .result-tile { min-width: 0 !important; width: auto !important; }
/* zoom crops at their true size, one output pixel per screen pixel (scroll if wider than the tile) */
.zoom-1to1 img { width: auto !important; height: auto !important; max-width: none !important;
                 max-height: none !important; object-fit: none !important; image-rendering: pixelated; }
.zoom-1to1 .image-container, .zoom-1to1 .image-frame, .zoom-1to1 button { overflow: auto; justify-content: flex-start;
                 align-items: flex-start; }
.edit-status { padding: 10px 12px; border-radius: 8px; border: 1px solid var(--border-color-primary); }
.edit-status-error { border-color: #d33; background: rgba(221, 51, 51, 0.08); }
.edit-status-done { border-color: #3a3; }
.edit-bar { height: 8px; margin-top: 8px; background: var(--neutral-200); border-radius: 4px; overflow: hidden; }
.edit-bar > div { height: 100%; background: var(--color-accent); transition: width 0.3s; }
#edit-method-guide table { font-size: 0.85em; }
#edit-method-guide td, #edit-method-guide th { padding: 2px 6px; }
"""
MAX_UPLOAD = "40mb"


def default_cache_dir() -> Path:
    """Where outputs and examples are kept: `MOBILEPICASSO_CACHE`, else the user's own cache
    (`$XDG_CACHE_HOME` or `~/.cache`). Not a fixed folder under the shared temp dir, where another
    user could read the edits or plant files the app then serves."""
    if os.environ.get("MOBILEPICASSO_CACHE"):
        return Path(os.environ["MOBILEPICASSO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilepicasso" / "demo"


def open_cache_dir(path: Path) -> Path:
    """Create the cache folder readable by its owner only (an existing folder keeps its mode)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@dataclass
class AppConfig:
    models: str = field(default_factory=lambda: os.environ.get("MOBILEPICASSO_MODELS", "mini"))
    study_db: str | None = "study.db"       # SQLite path or SQLAlchemy URL
    stimuli: str | None = "stimuli"         # folder written by `python -m study prepare`
    admin_token: str | None = field(default_factory=lambda: os.environ.get("STUDY_ADMIN_TOKEN") or None)
    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str | None = field(default_factory=lambda: os.environ.get("MOBILEPICASSO_DEVICE"))  # None: CPU, fp32
    dtype: str | None = field(default_factory=lambda: os.environ.get("MOBILEPICASSO_DTYPE"))
    sizes: tuple[tuple[str, str], ...] = SIZES
    default_size: str = DEFAULT_SIZE  # seconds on a CPU; 4K is one click away


@dataclass
class App:
    blocks: gr.Blocks
    study: object | None = None             # the StudyService, when a study is configured
    allowed_paths: list[str] = field(default_factory=list)


def _study_service(config: AppConfig):
    """The StudyService, or None and a message saying why the Study tab is empty."""
    if not config.study_db or not config.stimuli:
        return None, "No study is configured for this app (`--study-db` and `--stimuli`)."
    if not Path(config.stimuli).is_dir():
        return None, (f"No study is prepared here: the stimuli folder `{config.stimuli}` does not exist. Prepare one "
                      "with `python -m study prepare --out stimuli/ --db study.db ...` (see `study/README.md`), "
                      "then start the app with `--study-db study.db --stimuli stimuli/`.")
    try:
        from study.service import StudyService

        return StudyService(config.study_db, config.stimuli), None
    except Exception as err:  # the Edit tab must work whatever state the study code is in
        traceback.print_exc()
        return None, f"The study could not be opened: {type(err).__name__}: {err}"


def _render_study(service, message: str | None) -> None:
    if service is None:
        gr.Markdown(message, elem_id="study-unavailable")
        return
    try:
        from study.ui import render_study_tab

        render_study_tab(service)
    except Exception as err:
        traceback.print_exc()
        gr.Markdown(f"The Study tab failed to load: {type(err).__name__}: {err}", elem_id="study-unavailable")


def _render_results(config: AppConfig) -> None:
    if not config.study_db:
        gr.Markdown("No study database is configured (`--study-db`), so there are no results.",
                    elem_id="results-unavailable")
        return
    try:
        from study.analysis.ui import render_results_tab
        from study.db import votes_frame

        render_results_tab(lambda: votes_frame(config.study_db), config.admin_token)
    except Exception as err:
        traceback.print_exc()
        gr.Markdown(f"The Results tab failed to load: {type(err).__name__}: {err}", elem_id="results-unavailable")


def build_app(config: AppConfig | None = None) -> App:
    """The one Blocks app the Space, `python app.py` and the tests share."""
    config = config or AppConfig()
    open_cache_dir(config.cache_dir)
    service, study_message = _study_service(config)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as blocks:
        with gr.Tabs(selected="edit"):
            with gr.Tab("Edit", id="edit", elem_id="tab-edit"):
                render_edit_tab(config.models, config.cache_dir, config.sizes, config.default_size, page=blocks,
                                device=config.device, dtype=config.dtype)
            with gr.Tab("Study", id="study", elem_id="tab-study"):
                _render_study(service, study_message)
            with gr.Tab("Results", id="results", elem_id="tab-results"):
                _render_results(config)
    blocks.queue(default_concurrency_limit=8)  # study events; editing has its own limit of 1
    allowed = [str(config.cache_dir)] + (service.allowed_paths if service else [])
    return App(blocks, service, allowed)


def build_server(config: AppConfig | None = None, host: str = "127.0.0.1") -> FastAPI:
    """FastAPI app: the study's JSON API under `/study/api`, the Gradio app at `/`."""
    config = config or AppConfig()
    app = build_app(config)
    server = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)
    if app.study is not None:
        from study.api import router

        server.include_router(router(app.study, config.admin_token))  # before the catch-all Gradio mount
    return gr.mount_gradio_app(
        server, app.blocks, path="/", allowed_paths=app.allowed_paths, footer_links=["api", "gradio"],
        ssr_mode=False, server_name=host, max_file_size=MAX_UPLOAD, theme=gr.themes.Default(primary_hue="orange"),
        css=CSS,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on (a Space sets GRADIO_SERVER_NAME=0.0.0.0)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--models", default=os.environ.get("MOBILEPICASSO_MODELS", "mini"),
                   help="model set: mini (bundled, default), sd15 (Hub), sd15-arch or a folder (env MOBILEPICASSO_MODELS)")
    p.add_argument("--device", default=os.environ.get("MOBILEPICASSO_DEVICE", "auto"),
                   help="auto (CUDA if present, else CPU) | cpu | cuda (env MOBILEPICASSO_DEVICE)")
    p.add_argument("--dtype", default=os.environ.get("MOBILEPICASSO_DTYPE", "auto"),
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: fp16 on CUDA, bf16 upscaling on a CPU with native bf16, else fp32 (env MOBILEPICASSO_DTYPE)")
    p.add_argument("--study-db", default="study.db", help="study database: SQLite path or SQLAlchemy URL")
    p.add_argument("--stimuli", default="stimuli", help="stimuli folder written by `python -m study prepare`")
    p.add_argument("--cache-dir", default=None, help="where outputs and examples are kept (env MOBILEPICASSO_CACHE; "
                   "default ~/.cache/mobilepicasso/demo, private to the user)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    config = AppConfig(models=args.models, study_db=args.study_db, stimuli=args.stimuli, device=args.device,
                       dtype=args.dtype)
    if args.cache_dir:
        config.cache_dir = Path(args.cache_dir)
    server = build_server(config, args.host)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"MobilePicasso ({config.models}) at http://{shown}:{args.port}/  (study JSON API under /study/api)", flush=True)
    uvicorn.run(server, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
