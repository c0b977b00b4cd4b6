"""The standalone study server: the participant flow, the JSON API and the admin routes, nothing else.

``build_app`` mounts the Gradio participant flow at ``/`` and the JSON API (with the admin
routes) at ``/study/api``, behind two ASGI middlewares:

* ``RouteAllowlist``: only the paths the participant page needs (the page, its config and
  static assets, Gradio's event queue and heartbeat, Gradio-cached files) and the JSON API are
  answered; everything else Gradio or FastAPI would serve (uploads, ``/openapi.json``, API info,
  monitoring, MCP, run history, ...) is a plain 404.
* ``BodySizeLimit``: request bodies over ``max_body_bytes`` are refused with 413 before they
  are read into memory (by ``Content-Length``, and while streaming for chunked bodies).
"""
from __future__ import annotations

import os
import re

import gradio as gr
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse

from study.api import PREFIX, router
from study.service import StudyService
from study.ui import build_blocks

MAX_BODY_BYTES = 64 * 1024
PARTICIPANT_ROUTES = (
    r"/", r"/config/?", r"/theme\.css", r"/favicon\.ico", r"/robots\.txt",
    r"/(assets|static|svelte)/.*",
    r"/gradio_api/(queue/join|queue/data|heartbeat/[^/]+|startup-events|cancel)/?",
    r"/gradio_api/file=.*",
)


class RouteAllowlist:
    """Answer only ``allowed`` path patterns (full matches); 404 for everything else."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app = app
        self.allowed = re.compile("|".join(f"(?:{p})" for p in allowed))

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and not self.allowed.fullmatch(scope.get("path", "")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await PlainTextResponse("not found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so a framework that wraps body-parsing errors
    (FastAPI answers them with 400) passes it on and it is answered with 413."""

    def __init__(self):
        super().__init__(status_code=413, detail="request body too large")


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413 (Content-Length or streamed)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)


def build_app(service: StudyService, admin_token: str | None = None,
              max_body_bytes: int = MAX_BODY_BYTES):
    """``/study/api/...`` (JSON) plus the participant flow at ``/`` (``?pid=...`` to identify)."""
    admin_token = admin_token or os.environ.get("STUDY_ADMIN_TOKEN") or None
    app = FastAPI(title="Image editing study", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router(service, admin_token))  # before the catch-all Gradio mount
    demo = build_blocks(service)
    demo.queue(default_concurrency_limit=8)
    app = gr.mount_gradio_app(app, demo, path="/", allowed_paths=service.allowed_paths,
                              footer_links=[], ssr_mode=False, server_name="127.0.0.1")
    app.add_middleware(RouteAllowlist, allowed=PARTICIPANT_ROUTES + (re.escape(PREFIX) + r"/.*",))
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app


def serve(service: StudyService, host: str = "127.0.0.1", port: int = 7861,
          admin_token: str | None = None) -> None:
    import uvicorn

    uvicorn.run(build_app(service, admin_token), host=host, port=port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=2)
