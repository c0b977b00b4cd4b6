"""The standalone study server: FastAPI app with the JSON API and the Gradio participant flow."""
from __future__ import annotations

import os

import gradio as gr
from fastapi import FastAPI

from study.api import router
from study.service import StudyService
from study.ui import build_blocks


def build_app(service: StudyService, admin_token: str | None = None) -> FastAPI:
    """``/study/api/...`` (JSON) plus the participant flow at ``/`` (``?pid=...`` to identify)."""
    admin_token = admin_token or os.environ.get("STUDY_ADMIN_TOKEN") or None
    app = FastAPI(title="Image editing study", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router(service, admin_token))  # before the catch-all Gradio mount
    demo = build_blocks(service)
    demo.queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(app, demo, path="/", allowed_paths=service.allowed_paths,
                               footer_links=[], ssr_mode=False, server_name="127.0.0.1")


def serve(service: StudyService, host: str = "127.0.0.1", port: int = 7860,
          admin_token: str | None = None) -> None:
    import uvicorn

    uvicorn.run(build_app(service, admin_token), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=2)
