"""The participant flow as a Gradio 6 tab: consent and rubric, blinded trials, completion code.

``render_study_tab(service)`` builds the components inside the caller's current Blocks/Tab
context. Handlers are thin: every decision (which trial, which side, whether a vote counts)
is made by ``StudyService``. Images are served as the prepared PNG files (content-hash names,
no metadata, one byte size per item), never re-encoded; the zoom crops are written as PNGs of
one fixed size for their dimensions; element ids and labels carry no method names. The response
time is measured in the browser (trial on screen -> click) and sent with the vote.
"""
from __future__ import annotations

from functools import lru_cache

import gradio as gr
from PIL import Image

from study.service import StudyError, StudyService, TrialView
from study.stimuli import encode_png, fixed_size_bound, write_stimulus

# Browser-side response time: the moment a trial is on screen is stamped after every screen
# update; a vote sends the milliseconds since then (null when no trial was stamped).
MARK_SHOWN = "() => { window.studyShownAt = performance.now(); }"
SEND_LATENCY = ("(pid, view, hl, hr, latency) => [pid, view, hl, hr, window.studyShownAt === undefined"
                " ? null : Math.round(performance.now() - window.studyShownAt)]")

CONSENT = """
## Which edit is better?

In this study you compare pairs of edited photos. Each trial shows an **original photo**, the
**edit instruction** that was given, and two edited versions, **A** (left) and **B** (right),
made by different editing programs in random order. Please judge which edit follows the
instruction better *and* looks more natural, then answer with one of the four buttons:
**A is better**, **B is better**, **Both good** or **Both bad**.

Use the **zoom** (sliders, or click on either image) to inspect the same region of both edits
at full resolution. Take your time; there is no right speed. A few trials are repeated or are
easy checks of attention.

Taking part is voluntary. We record your answers, the time each answer took and the
participant id from your link; nothing else about you. You may stop at any time by closing the
page; your answers so far are kept, and the same link lets you continue where you stopped.
"""

RUBRIC = """
### What counts as a hallucination

Tick **"contains a hallucination"** under an edit when it shows content that was **not
requested and is not plausible**, for example:

| Kind | Looks like |
|---|---|
| Duplicated or floating objects | an object, limb or part of the scene appears twice, or hangs in the air |
| Distortions | faces, hands, straight lines or shapes warped without being asked |
| Garbled detail | texture, text or fine structure that dissolves into noise or meaningless patterns |
| Unrequested content | new objects, people or text the instruction did not ask for |

Changes the instruction asked for, and plain blur or low sharpness, are *not* hallucinations
(judge those with the buttons). Examples:
"""


@lru_cache(maxsize=256)
def _image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def zoom_crops(service: StudyService, view: TrialView, x_pct: float, y_pct: float):
    """The same full-resolution window from both sides, centred at (x %, y %), as paths of PNG
    files whose byte size depends only on the window's dimensions (no size side channel)."""
    if view.status != "trial":
        return None, None
    crops = []
    for name in (view.left, view.right):
        path = str(service.stimuli_dir / name)
        w, h = _image_size(path)
        side = min(service.config.zoom_window, w, h)
        cx, cy = x_pct / 100 * w, y_pct / 100 * h
        x0 = int(min(max(cx - side / 2, 0), w - side))
        y0 = int(min(max(cy - side / 2, 0), h - side))
        with Image.open(path) as img:
            crop = img.convert("RGB").crop((x0, y0, x0 + side, y0 + side))
        data = encode_png(crop).to_bytes(fixed_size_bound(side, side))
        crops.append(str(service.zoom_dir / write_stimulus(data, service.zoom_dir)[0]))
    return crops[0], crops[1]


def render_study_tab(service: StudyService, storage_key: str = "image-study-participant") -> None:
    """Build the study flow in the current Blocks context (call inside ``with gr.Tab(...)``)."""
    stored_id = gr.BrowserState(None, storage_key=storage_key, secret=service.browser_key)
    participant = gr.State(None)
    view_state = gr.State(None)
    latency = gr.Number(None, visible=False, elem_id="study-latency")

    with gr.Column(visible=True, elem_id="study-consent") as consent_col:
        gr.Markdown(CONSENT)
        gr.Markdown(RUBRIC)
        examples = service.rubric_examples()
        if examples:
            gr.Gallery(value=examples, format="png", columns=len(examples), height=260,
                       show_label=False, allow_preview=False, interactive=False)
        agree = gr.Checkbox(label="I have read the information above and agree to take part",
                            elem_id="study-agree")
        start = gr.Button("Start", variant="primary", elem_id="study-start")
    with gr.Column(visible=False, elem_id="study-trial") as trial_col:
        progress_md = gr.Markdown(elem_id="study-progress")
        instruction_md = gr.Markdown(elem_id="study-instruction")
        source_img = gr.Image(label="Original", type="filepath", format="png", interactive=False,
                              height=240, elem_id="study-source")
        with gr.Row():
            left_img = gr.Image(label="A", type="filepath", format="png", interactive=False,
                                elem_id="study-a")
            right_img = gr.Image(label="B", type="filepath", format="png", interactive=False,
                                 elem_id="study-b")
        with gr.Row():
            zoom_x = gr.Slider(0, 100, value=50, step=1, label="Zoom: horizontal position (%)",
                               elem_id="study-zoom-x")
            zoom_y = gr.Slider(0, 100, value=50, step=1, label="Zoom: vertical position (%)",
                               elem_id="study-zoom-y")
        with gr.Row():
            zoom_left = gr.Image(label="A (zoom, full resolution)", format="png", interactive=False,
                                 elem_id="study-zoom-a")
            zoom_right = gr.Image(label="B (zoom, full resolution)", format="png", interactive=False,
                                  elem_id="study-zoom-b")
        with gr.Row():
            halluc_left = gr.Checkbox(label="A contains a hallucination", elem_id="study-halluc-a")
            halluc_right = gr.Checkbox(label="B contains a hallucination", elem_id="study-halluc-b")
        with gr.Row():
            buttons = {
                "left": gr.Button("A is better", elem_id="study-vote-a"),
                "right": gr.Button("B is better", elem_id="study-vote-b"),
                "both_good": gr.Button("Both good", elem_id="study-vote-both-good"),
                "both_bad": gr.Button("Both bad", elem_id="study-vote-both-bad"),
            }
    with gr.Column(visible=False, elem_id="study-done") as done_col:
        done_md = gr.Markdown(elem_id="study-done-text")

    screen = [participant, view_state, stored_id, consent_col, trial_col, done_col, done_md,
              progress_md, instruction_md, source_img, left_img, right_img, zoom_x, zoom_y,
              zoom_left, zoom_right, halluc_left, halluc_right]

    def show(view: TrialView | None, message: str = ""):
        pid = view.participant if view else None
        status = view.status if view else "consent"
        trial = status == "trial"
        done_text = message
        if message and status == "consent":
            gr.Warning(message)
        if status == "done":
            done_text = (f"## Thank you!\n\nYou have completed the study ({view.k} comparisons). "
                         f"Your completion code is **`{view.completion_code}`**.")
        elif status == "no_work":
            done_text = ("## No work left\n\nAll comparisons of this study have been collected, so "
                         "there is nothing to do for you right now. Thank you for your interest; "
                         "you do not need to do anything else.")
        path = (lambda name: str(service.stimuli_dir / name)) if trial else (lambda name: None)
        crops = zoom_crops(service, view, 50, 50) if trial else (None, None)
        return (
            pid, view.to_dict() if view else None, pid,
            gr.update(visible=status == "consent"), gr.update(visible=trial),
            gr.update(visible=status in ("done", "no_work")), done_text,
            f"**Trial {view.k} of {view.n}**" if trial else "",
            f"**Instruction:** {view.instruction}" if trial else "",
            path(view.source) if trial else None, path(view.left) if trial else None,
            path(view.right) if trial else None, 50, 50, crops[0], crops[1], False, False,
        )

    def identify(request: gr.Request | None, *known: str | None) -> str | None:
        """URL ``?pid=`` first, then this tab's state, then the id kept in the browser."""
        url_pid = request.query_params.get("pid") if request is not None else None
        return next((p for p in (url_pid, *known) if p), None)

    def client_of(request: gr.Request | None) -> str | None:
        return request.client.host if request is not None and request.client else None

    def on_load(stored: str | None, request: gr.Request):
        pid = identify(request, stored)
        if not pid:
            return show(None)
        try:
            pid = service.join(pid, client=client_of(request))
            return show(service.current(pid))
        except StudyError as exc:
            return show(None, str(exc))

    def on_start(pid: str | None, stored: str | None, agreed: bool, request: gr.Request):
        pid = identify(request, pid, stored)  # the click may beat the page-load event
        if not agreed:
            gr.Warning("Please tick the consent box to start.")
            return show(service.current(pid) if pid else None)
        try:
            pid = service.join(pid, client=client_of(request))
        except StudyError as exc:
            return show(None, str(exc))
        return show(service.consent(pid))

    def make_vote(choice: str):
        def on_vote(pid: str | None, view: dict | None, h_left: bool, h_right: bool,
                    latency_ms: float | None):
            if not pid or not view or view.get("trial_id") is None:
                return show(service.current(pid) if pid else None)
            client_ms = int(latency_ms) if latency_ms is not None and 0 <= latency_ms < 8.64e7 else None
            try:
                result = service.vote(pid, view["trial_id"], choice, h_left, h_right, client="gradio",
                                      client_latency_ms=client_ms)
            except StudyError as exc:
                gr.Warning(str(exc))
                return show(service.current(pid))
            return show(result.next)
        return on_vote

    def on_zoom(view: dict | None, x: float, y: float):
        return zoom_crops(service, TrialView(**view), x, y) if view else (None, None)

    def on_click(view: dict | None, which: str, evt: gr.SelectData):
        if not view or view.get("status") != "trial" or evt is None or evt.index is None:
            return gr.update(), gr.update()
        w, h = _image_size(str(service.stimuli_dir / view[which]))
        x, y = evt.index[0], evt.index[1]
        return round(100 * x / w), round(100 * y / h)

    root = gr.context.Context.root_block
    root.load(on_load, inputs=[stored_id], outputs=screen, api_visibility="private").then(
        None, js=MARK_SHOWN, api_visibility="private")
    start.click(on_start, inputs=[participant, stored_id, agree], outputs=screen,
                api_visibility="private").then(None, js=MARK_SHOWN, api_visibility="private")
    for choice, button in buttons.items():
        button.click(make_vote(choice), inputs=[participant, view_state, halluc_left, halluc_right, latency],
                     outputs=screen, api_visibility="private", concurrency_id="study-vote",
                     js=SEND_LATENCY).then(None, js=MARK_SHOWN, api_visibility="private")
    for slider in (zoom_x, zoom_y):
        slider.release(on_zoom, inputs=[view_state, zoom_x, zoom_y], outputs=[zoom_left, zoom_right],
                       api_visibility="private")
    def click_left(view: dict | None, evt: gr.SelectData):
        return on_click(view, "left", evt)

    def click_right(view: dict | None, evt: gr.SelectData):
        return on_click(view, "right", evt)

    for image, handler in ((left_img, click_left), (right_img, click_right)):
        image.select(handler, inputs=[view_state], outputs=[zoom_x, zoom_y], api_visibility="private").then(
            on_zoom, inputs=[view_state, zoom_x, zoom_y], outputs=[zoom_left, zoom_right],
            api_visibility="private")


def build_blocks(service: StudyService) -> gr.Blocks:
    """A standalone Blocks app holding only the study tab (``python -m study serve``)."""
    with gr.Blocks(title="Image editing study", analytics_enabled=False) as demo:
        render_study_tab(service)
    return demo
