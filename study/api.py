"""JSON API of the study (simulation, load tests, admin): thin handlers over ``StudyService``.

Participant endpoints return only ``TrialView`` payloads (instruction, content-hash image URLs,
progress) and never a method name; admin endpoints require the admin token. Every field is
bounded (ids, strings), so no input reaches the database outside its column's range.
"""
from __future__ import annotations

import io
import math
import secrets
from typing import Optional

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from study.service import MAX_CLIENT_LATENCY_MS, MAX_ID, RateLimited, StudyError, StudyService, TrialView

PREFIX = "/study/api"
PARTICIPANT_ID = Field(min_length=1, max_length=128)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JoinRequest(_Body):
    pid: Optional[str] = Field(default=None, max_length=128)


class ParticipantRequest(_Body):
    participant: str = PARTICIPANT_ID


class VoteRequest(_Body):
    participant: str = PARTICIPANT_ID
    trial_id: int = Field(ge=1, le=MAX_ID)
    choice: str = Field(max_length=16)
    halluc_left: bool = False
    halluc_right: bool = False
    client_latency_ms: Optional[int] = Field(default=None, ge=0, le=MAX_CLIENT_LATENCY_MS)


def public_view(view: TrialView, prefix: str = PREFIX) -> dict:
    data = view.to_dict()
    for key in ("source", "left", "right"):
        data[key] = f"{prefix}/stimuli/{data[key]}" if data[key] else ""
    return data


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def router(service: StudyService, admin_token: str | None = None, prefix: str = PREFIX) -> APIRouter:
    """Routes under ``prefix``; admin routes are refused unless ``admin_token`` is set and sent
    as ``Authorization: Bearer <token>`` or ``X-Admin-Token``."""
    api = APIRouter(prefix=prefix)

    def call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RateLimited as exc:
            raise HTTPException(status_code=429, detail=str(exc),
                                headers={"Retry-After": str(math.ceil(exc.retry_after_s))}) from None
        except StudyError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    def require_admin(authorization: Optional[str] = Header(default=None),
                      x_admin_token: Optional[str] = Header(default=None)) -> None:
        sent = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        if not admin_token or not sent or not secrets.compare_digest(sent.encode(), admin_token.encode()):
            raise HTTPException(status_code=401, detail="admin token required")

    # The participant routes answer a JSONResponse of plain str/int values: FastAPI then skips
    # validating and re-encoding a response model, a large share of a vote's server time.
    @api.post("/session")
    def join(body: JoinRequest, request: Request) -> JSONResponse:
        participant = call(service.join, body.pid, client=client_address(request))
        return JSONResponse(public_view(call(service.current, participant), prefix))

    @api.post("/consent")
    def consent(body: ParticipantRequest) -> JSONResponse:
        return JSONResponse(public_view(call(service.consent, body.participant), prefix))

    @api.get("/trial")
    def trial(participant: str = Query(..., min_length=1, max_length=128)) -> JSONResponse:
        return JSONResponse(public_view(call(service.current, participant), prefix))

    @api.post("/vote")
    def vote(body: VoteRequest) -> JSONResponse:
        result = call(service.vote, body.participant, body.trial_id, body.choice,
                      body.halluc_left, body.halluc_right, client="api",
                      client_latency_ms=body.client_latency_ms)
        return JSONResponse({"status": result.status, "next": public_view(result.next, prefix)})

    @api.get("/stimuli/{name}")
    def stimulus(name: str) -> Response:
        """The file's bytes with headers derived from its name only: no modification time, and
        an ETag that is the content hash (the name), so headers say nothing about rendering."""
        try:
            path = service.stimulus_path(name)
        except StudyError:
            raise HTTPException(status_code=404, detail="not found") from None
        return Response(path.read_bytes(), media_type="image/png",
                        headers={"ETag": f'"{name[:-4]}"', "Cache-Control": "private, max-age=86400, immutable"})

    @api.get("/admin/{report}", dependencies=[Depends(require_admin)])
    def admin_report(report: str):
        if report == "export":
            from study.db import votes_frame

            buffer = io.StringIO()
            votes_frame(service.engine.url.render_as_string(hide_password=False)).to_csv(buffer, index=False)
            return PlainTextResponse(buffer.getvalue(), media_type="text/csv")
        reports = {"progress": service.progress, "participants": service.participants,
                   "exclusions": service.exclusions, "identical": service.identical_pairs}
        if report not in reports:
            raise HTTPException(status_code=404, detail="unknown report")
        frame = reports[report]()
        payload = {"rows": frame.to_dict(orient="records")}
        if report == "exclusions":
            payload["rule"] = service.config.exclusion_rule()
        return payload

    return api
