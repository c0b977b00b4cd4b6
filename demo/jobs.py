"""The Edit tab's bookkeeping, without Gradio: who waits for what, and results kept for examples.

- `EditQueue`: one ticket per Run click, in click order, with the cost model's estimate; it answers
  "how many edits are ahead of mine and about how long they take" from those estimates (Gradio's own
  queue estimate is the mean of past runs of any method at any size, which says nothing here).
- `ResultCache`: results of example inputs (keyed by the image's bytes and every setting), so an
  example that has been run once, or was computed at startup, shows again at once.
- `ActedPages`: pages whose visitor has done something since loading, so that the slow, queued
  page-load event (which shows the preloaded example's result) cannot overwrite a later click's
  status when it finishes after it.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from demo.compare import Comparison

STALE_SECONDS = 3600.0  # a ticket still waiting after this long belongs to a page that went away


@dataclass
class Ticket:
    id: int
    estimate: float | None          # seconds, from the cost model; None when unknown
    created: float = field(default_factory=time.monotonic)
    started: float | None = None


class EditQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets: dict[int, Ticket] = {}
        self._next = 1

    def join(self, estimate: float | None) -> int:
        with self._lock:
            self._drop_stale()
            ticket = Ticket(self._next, estimate)
            self._next += 1
            self._tickets[ticket.id] = ticket
            return ticket.id

    def ahead(self, ticket_id: int) -> tuple[int, float | None]:
        """(edits ahead of this ticket, their remaining estimated seconds or None if any is unknown)."""
        with self._lock:
            before = [t for t in self._tickets.values() if t.id < ticket_id]
            seconds: float | None = 0.0
            for t in before:
                if t.estimate is None:
                    seconds = None
                elif seconds is not None:
                    elapsed = time.monotonic() - t.started if t.started is not None else 0.0
                    seconds += max(t.estimate - elapsed, 0.0)
            return len(before), seconds

    def waiting(self, ticket_id: int) -> bool:
        with self._lock:
            t = self._tickets.get(ticket_id)
            return t is not None and t.started is None

    def start(self, ticket_id: int) -> None:
        """The ticket's edit begins. Gradio's queue is first come, first served, so earlier tickets
        that never started were cancelled (their page closed): they are dropped."""
        with self._lock:
            for t in list(self._tickets.values()):
                if t.id < ticket_id and t.started is None:
                    del self._tickets[t.id]
            t = self._tickets.get(ticket_id)
            if t is None:
                t = self._tickets[ticket_id] = Ticket(ticket_id, None)
            t.started = time.monotonic()

    def finish(self, ticket_id: int) -> None:
        with self._lock:
            self._tickets.pop(ticket_id, None)

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for t in list(self._tickets.values()):
            if t.started is None and now - t.created > STALE_SECONDS:
                del self._tickets[t.id]


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ResultCache:
    """Comparisons of example inputs, in memory; an entry whose files are gone is a miss."""

    def __init__(self, example_paths: list[Path]) -> None:
        self._lock = threading.Lock()
        self._examples = {file_digest(p) for p in example_paths if Path(p).is_file()}
        self._entries: dict[str, dict] = {}

    def key(self, image_path: str | Path, **settings) -> str | None:
        """The cache key of an example input with these settings; None for any other input."""
        try:
            digest = file_digest(image_path)
        except OSError:
            return None
        if digest not in self._examples:
            return None
        return digest + json.dumps(settings, sort_keys=True, default=str)

    def get(self, key: str | None) -> Comparison | None:
        with self._lock:
            state = self._entries.get(key) if key else None
        if state is None:
            return None
        c = Comparison.from_state(state)
        if not all(o.path.is_file() and o.preview.is_file() for o in c.outputs if o.ok) or not c.source_preview.is_file():
            with self._lock:
                self._entries.pop(key, None)
            return None
        return c

    def put(self, key: str | None, comparison: Comparison) -> None:
        if key:
            with self._lock:
                self._entries[key] = comparison.to_state()


class ActedPages:
    """Session ids of pages where the visitor has acted (Run, upload, clear, example click); the
    oldest are forgotten past `limit`, so the record stays small however many pages are opened."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def mark(self, session: str | None) -> None:
        if not session:
            return
        with self._lock:
            self._seen[session] = None
            self._seen.move_to_end(session)
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)

    def __contains__(self, session: object) -> bool:
        with self._lock:
            return session in self._seen
