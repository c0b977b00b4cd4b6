"""JSON API of the study (simulation, load tests, admin): thin handlers over ``StudyService``.

Participant endpoints return only ``TrialView`` payloads (instruction, content-hash image URLs,
progress) and never a method name; admin endpoints require the admin token.
"""
from __future__ import annotations

import io
import secrets
from typing import Optional

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel

from study.service import StudyError, StudyService, TrialView

PREFIX = "/study/api"


class JoinRequest(BaseModel):
    pid: Optional[str] = None


class ParticipantRequest(BaseModel):
    participant: str


class VoteRequest(BaseModel):
    participant: str
    trial_id: int
    choice: str
    halluc_left: bool = False
    halluc_right: bool = False


def public_view(view: TrialView, prefix: str = PREFIX) -> dict:
    data = view.to_dict()
    for key in ("source", "left", "right"):
        data[key] = f"{prefix}/stimuli/{data[key]}" if data[key] else ""
    return data


def router(service: StudyService, admin_token: str | None = None, prefix: str = PREFIX) -> APIRouter:
    """Routes under ``prefix``; admin routes are refused unless ``admin_token`` is set and sent
    as ``Authorization: Bearer <token>`` or ``X-Admin-Token``."""
    api = APIRouter(prefix=prefix)

    def call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudyError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    def require_admin(authorization: Optional[str] = Header(default=None),
                      x_admin_token: Optional[str] = Header(default=None)) -> None:
        sent = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        if not admin_token or not sent or not secrets.compare_digest(sent.encode(), admin_token.encode()):
            raise HTTPException(status_code=401, detail="admin token required")

    @api.post("/session")
    def join(body: JoinRequest) -> dict:
        participant = call(service.join, body.pid)
        return public_view(call(service.current, participant), prefix)

    @api.post("/consent")
    def consent(body: ParticipantRequest) -> dict:
        return public_view(call(service.consent, body.participant), prefix)

    @api.get("/trial")
    def trial(participant: str = Query(...)) -> dict:
        return public_view(call(service.current, participant), prefix)

    @api.post("/vote")
    def vote(body: VoteRequest) -> dict:
        result = call(service.vote, body.participant, body.trial_id, body.choice,
                      body.halluc_left, body.halluc_right, client="api")
        return {"status": result.status, "next": public_view(result.next, prefix)}

    @api.get("/stimuli/{name}")
    def stimulus(name: str) -> FileResponse:
        try:
            path = service.stimulus_path(name)
        except StudyError:
            raise HTTPException(status_code=404, detail="not found") from None
        return FileResponse(path, media_type="image/png")

    @api.get("/admin/{report}", dependencies=[Depends(require_admin)])
    def admin_report(report: str):
        if report == "export":
            from study.db import votes_frame

            buffer = io.StringIO()
            votes_frame(service.engine.url.render_as_string(hide_password=False)).to_csv(buffer, index=False)
            return PlainTextResponse(buffer.getvalue(), media_type="text/csv")
        reports = {"progress": service.progress, "participants": service.participants,
                   "exclusions": service.exclusions}
        if report not in reports:
            raise HTTPException(status_code=404, detail="unknown report")
        frame = reports[report]()
        payload = {"rows": frame.to_dict(orient="records")}
        if report == "exclusions":
            payload["rule"] = service.config.exclusion_rule()
        return payload

    return api
