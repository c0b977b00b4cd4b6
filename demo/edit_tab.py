"""The Edit tab: one input, one instruction, several methods side by side at 1K / 2K / 4K.

`render_edit_tab(...)` builds the components inside the caller's current Blocks/Tab context, like
the Study and Results tabs. What a first visit looks like:
- the first example the loaded set can edit is already in the input, and its result (computed in
  the background at startup, at the default size) is on the page when it loads;
- the default size answers in seconds on a CPU; every method shows a one-line description and an
  estimated time for the chosen size (`demo.costs`), and slow ones are flagged before Run;
- Run shows its state on the button and progress in the results area beside it, which is scrolled
  into view; a run clears the previous status and results first; a waiting run says how many edits
  are ahead and, from the cost model, about how long they take (or nothing, when unknown);
- every upload is checked by the pipeline's own image check (`demo.upload`), also after an example
  click; messages are one sentence, never a trace or a server path;
- results sit above the examples: equal-width tiles, each with its preview (the zoom box drawn on
  it), a true 1:1 crop, metrics and a download; failed methods are one line;
- the settings sit beside the slider and the method guide under the results, so the tiles start
  right below the inputs: Gradio's images load lazily (`loading="lazy"`), and a tile far below
  the fold stays an empty 0x0 box until the visitor scrolls near it.

The public API endpoint `/edit` (image, instruction, methods, size, seed, randomise, steps, text and
image guidance -> seed, before/after, status, files, reports) is a separate event that raises its
errors; the page's own Run event is private. Work is in `demo.compare`; bookkeeping in `demo.jobs`.
"""
from __future__ import annotations

import html
import random
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

import pipeline
from demo import compare
from demo.costs import CostModel, duration
from demo.examples import Example, write_examples
from demo.jobs import ActedPages, EditQueue, ResultCache
from demo.upload import CheckedImage, UnusableUpload, check_file, sentence
from pipeline.inputs import InputError, parse_size
from pipeline.model_sets import ModelSetUnavailable, SetInfo, load_model_set
from pipeline.photoedit import PHRASES

SIZES: tuple[tuple[str, str], ...] = (("1K (1024 px)", "1k"), ("2K (2048 px)", "2k"), ("4K (3840 px)", "4k"))
DEFAULT_SIZE = "1k"   # mobilepicasso answers in about a second here at 1K; 4K takes ~20 s on this CPU
ZOOM_WINDOWS = (128, 256, 384, 512)
DEFAULT_WINDOW = 256
PREVIEW_HEIGHT = 260
DEFAULT_METHOD = "mobilepicasso"
HOW_TO = (
    "Pick an example (the first one is loaded, with its result below) or upload an image, say what to change, "
    "choose the methods and the output size, then **Run**. Each method gets a tile with its latency, peak memory, "
    "U-Net evaluations and tiles. **Click any result** (or move the zoom sliders) to see the same region of every "
    "output at full resolution, 1:1. Downloads are the full-resolution PNGs."
)
SCROLL_TO_OUTPUT = ("() => { const el = document.querySelector('#edit-output');"
                    " if (el) el.scrollIntoView({behavior: 'instant', block: 'nearest'}); }")
SCROLL_TO_INPUT = ("() => { const el = document.querySelector('#edit-inputs');"
                   " if (el) el.scrollIntoView({behavior: 'instant', block: 'start'}); }")
RUN_LOCK = threading.Lock()  # one edit at a time, whichever event (page or API) started it


def model_notice(name: str, info: SetInfo | None, error: str | None = None) -> str:
    """What the loaded model set is and what it can be expected to do, said plainly."""
    if info is None:
        return (f"**Model set `{name}` is not available here:** {error} Editing is disabled; start the app with "
                "`--models mini` (bundled, offline) or give it network access to the Hub.")
    lines = [f"**Model set:** `{info.name}`: {info.description}. **Trained on:** {info.trained_on}."]
    if not info.trained:
        lines.append(f"⚠️ **UNTRAINED**: {', '.join(info.untrained)} have random weights, so the edits are "
                     "noise. Latency, memory, U-Net evaluations and tiling are still real.")
    if not knows_photos(info) and info.photo_looks:
        said = ", ".join(f"“{PHRASES[look][0]}”" for look in info.photo_looks)
        lines.append(f"`{info.name}` edits photos only with **global looks**: {said} (and their other phrasings), "
                     "each one colour map over the whole photo. Other edits of photos will not work well with it; "
                     "for those run the Space with the Hub set (`MOBILEPICASSO_MODELS=sd15`, GPU).")
    elif not knows_photos(info):
        lines.append(f"`{info.name}` has not seen photos, so only the **SynthEdit** examples are offered. "
                     "Photos will not edit well with it; for photos run the Space with the Hub set "
                     "(`MOBILEPICASSO_MODELS=sd15`, GPU).")
    return "  \n".join(lines)


def knows_photos(info: SetInfo) -> bool:
    text = info.trained_on.lower()
    return "photo" in text and "not photo" not in text and "no photo" not in text


def examples_for(info: SetInfo | None, examples: list[Example]) -> list[Example]:
    """The examples the loaded set can edit: photos only for a set trained on photos, looks on photos
    for such a set or one whose `photo_looks` include the look, SynthEdit scenes for a set trained on
    them (or on photos: simple renders are images too). A set trained on nothing (random weights,
    for cost measurements) gets all of them."""
    if info is None:
        return []
    text = info.trained_on.lower()
    photos, synthedit = knows_photos(info), "synthedit" in text
    if not photos and not synthedit:
        return list(examples)
    return [e for e in examples if (e.kind == "photo" and photos) or (e.kind == "synthedit" and (synthedit or photos))
            or (e.kind == "look" and (photos or e.look in info.photo_looks))]


def _status(kind: str, text: str, fraction: float | None = None) -> str:
    """The status box beside Run: kind is info, busy, done or error; text is trusted HTML-free text
    or Markdown-free plain text with **bold** kept."""
    body = html.escape(text).replace("**", "\x00")
    parts = body.split("\x00")
    body = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    bar = ""
    if fraction is not None:
        bar = f'<div class="edit-bar"><div style="width:{max(0.0, min(1.0, fraction)) * 100:.0f}%"></div></div>'
    return f'<div class="edit-status edit-status-{kind}">{body}{bar}</div>'


@dataclass
class ResultTile:
    method: str
    column: gr.Column
    preview: gr.Image
    crop: gr.Image
    metrics: gr.Markdown
    download: gr.DownloadButton

    def components(self) -> list:
        return [self.column, self.preview, self.crop, self.metrics, self.download]


def render_edit_tab(models: str = "mini", cache_dir: str | Path = "demo-cache",
                    sizes: tuple[tuple[str, str], ...] = SIZES, default_size: str = DEFAULT_SIZE,
                    page: gr.Blocks | None = None, device: str | None = None, dtype: str | None = None) -> None:
    """Build the Edit tab in the current Blocks context; outputs and examples go under `cache_dir`.
    `page` (the enclosing Blocks) gets the load event that shows the preloaded example's result;
    `device` / `dtype` are `MobilePicassoPipeline.to`'s (None: the set as loaded, CPU fp32)."""
    cache = Path(cache_dir)
    try:
        model_set = load_model_set(models)
        info, load_error = model_set.info, None
    except ModelSetUnavailable as err:
        model_set, info, load_error = None, None, str(err)
    d_steps = info.steps if info else 20
    d_text = info.text_guidance if info else 7.5
    d_image = info.image_guidance if info else 1.5

    direct_cache: dict[tuple[int, int], float] = {}

    def direct_seconds(size: tuple[int, int]) -> float:
        """ip2p-direct's own estimate (exact FLOPs on a meta copy x measured throughput), per size."""
        from pipeline.costs import estimate_direct_edit

        f = info.edit_multiple
        size = (-(-size[0] // f) * f, -(-size[1] // f) * f)
        if size not in direct_cache:
            direct_cache[size] = estimate_direct_edit(model_set, size, d_steps, d_text, d_image)["seconds"]
        return direct_cache[size]

    costs = CostModel(models)  # ip2p-direct's FLOPs estimate is switched on once the example result is ready
    queue = EditQueue()
    acted = ActedPages()
    examples = examples_for(info, write_examples(cache / "examples"))
    results_cache = ResultCache([e.path for e in examples])
    first = examples[0] if examples else None
    ready = threading.Event()

    # -- what a choice of methods and size costs ---------------------------------------------------
    def output_size(image_path, size_value) -> tuple[int, int]:
        src = (1024, 576)
        path = image_path if isinstance(image_path, str) else (str(first.path) if first else None)
        if path:
            try:
                with Image.open(path) as img:
                    src = img.size
            except Exception:
                pass
        try:
            return parse_size(size_value, src)
        except InputError:
            return parse_size("1k", src)

    def method_label(name: str, size: tuple[int, int]) -> str:
        e = costs.estimate(name, size)
        flag = " ⚠ slow" if e.slow else ""
        return f"{name} · {duration(e.seconds)}{flag}"

    def guide_markdown(size: tuple[int, int]) -> str:
        w, h = size
        rows = [f"| method | time at {w}×{h} | what it does |", "|---|---|---|"]
        for name, m in pipeline.METHODS.items():
            e = costs.estimate(name, size)
            time_text = duration(e.seconds) + (" ⚠" if e.slow else "")
            rows.append(f"| `{name}` | {time_text} | {m.description} |")
        sources = {"benchmark": "the benchmark (`results/bench`, one CPU thread)",
                   "FLOPs": "exact FLOPs × this machine's U-Net speed", "measured here": "this app's last run"}
        used = sorted({costs.estimate(n, size).source for n in pipeline.METHODS} - {"none"})
        note = ("Times are estimates from " + ", ".join(sources[s] for s in used) + "." if used
                else "No time estimates for this model set yet: each method's first run here measures it.")
        return "\n".join(rows) + "\n\n<small>" + note + "</small>"

    def estimate_line(chosen, size: tuple[int, int]) -> str:
        chosen = [m for m in pipeline.METHODS if m in (chosen or [])]
        if not chosen:
            return "Choose at least one method."
        w, h = size
        total = costs.total(chosen, size)
        text = (f"**Estimated:** {duration(total)} for {len(chosen)} method{'s' if len(chosen) > 1 else ''} "
                f"at {w}×{h}." if total is not None else f"**Estimated:** unknown for some methods at {w}×{h}.")
        slow = [m for m in chosen if costs.estimate(m, size).slow]
        if slow:
            text += " ⚠️ **Slow:** " + ", ".join(f"`{m}` {duration(costs.estimate(m, size).seconds)}" for m in slow)
            text += "; a smaller size or fewer methods answers sooner."
        budget = pipeline.DEFAULT_TIME_BUDGET
        if "ip2p-direct" in chosen and (costs.estimate("ip2p-direct", size).seconds or 0) > budget:
            text += (f" `ip2p-direct` is over the {budget:.0f} s time budget at this size: it will be reported as "
                     "failed without running.")
        return text

    def plan(image_path, size_value, chosen):
        size = output_size(image_path, size_value)
        choices = [(method_label(n, size), n) for n in pipeline.METHODS]
        return gr.CheckboxGroup(choices=choices), guide_markdown(size), estimate_line(chosen, size)

    first_size = output_size(None, default_size)

    # -- layout ----------------------------------------------------------------------------------
    gr.Markdown("# MobilePicasso: instruction-based image editing at 4K\n" + HOW_TO, elem_id="edit-header")
    gr.Markdown(model_notice(models, info, load_error), elem_id="edit-model-set")

    with gr.Row(equal_height=False, elem_id="edit-top"):
        with gr.Column(scale=2, min_width=320, elem_id="edit-inputs"):
            image = CheckedImage(label="Input image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 format="png", height=280, value=str(first.path) if first else None,
                                 elem_id="edit-input")
            instruction = gr.Textbox(label="Instruction", placeholder="e.g. make the circle green", lines=1,
                                     max_lines=3, value=first.instruction if first else "", elem_id="edit-instruction")
            run = gr.Button("Run", variant="primary", interactive=info is not None, elem_id="edit-run")
            estimate = gr.Markdown(estimate_line([DEFAULT_METHOD], first_size), elem_id="edit-estimate")
            size = gr.Radio(choices=list(sizes), value=default_size, label="Output size (long side)",
                            elem_id="edit-size")
            methods = gr.CheckboxGroup(
                choices=[(method_label(n, first_size), n) for n in pipeline.METHODS], value=[DEFAULT_METHOD],
                label="Methods", info="Each one runs in turn, so every extra method adds its time.",
                elem_id="edit-methods")
        with gr.Column(scale=3, min_width=360, elem_id="edit-output"):
            status = gr.HTML(_status("info", "Results appear here." if not first else
                                     "The first example is loaded; its result appears here in a moment."),
                             elem_id="edit-status")
            slider = gr.ImageSlider(label="Before / after (preview; zoom below for full resolution)", type="filepath",
                                    format="png", max_height=440, interactive=False, elem_id="edit-slider")
            slider_method = gr.Radio(choices=[], label="After =", visible=False, elem_id="edit-slider-method")
            files = gr.File(label="All full-resolution PNGs", file_count="multiple", interactive=False,
                            visible=False, elem_id="edit-files")
            with gr.Group(elem_id="edit-settings"):
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="edit-seed", min_width=120)
                    randomise = gr.Checkbox(value=False, label="New seed each run", elem_id="edit-randomise")
                steps = gr.Slider(1, 100, value=d_steps, step=1, label="Steps (edit stage)",
                                  info=f"the set's default: {d_steps}", elem_id="edit-steps")
                text_guidance = gr.Slider(0, 15, value=d_text, step=0.1, label="Text guidance",
                                          info=f"the set's default: {d_text}", elem_id="edit-text-guidance")
                image_guidance = gr.Slider(0, 5, value=d_image, step=0.05, label="Image guidance",
                                           info=f"the set's default: {d_image}", elem_id="edit-image-guidance")
                with gr.Row():
                    seed_dice = gr.Button("Random seed", size="sm", elem_id="edit-seed-dice")
                    guidance_dice = gr.Button("Random guidance", size="sm", elem_id="edit-guidance-dice")
                    defaults = gr.Button("Set's defaults", size="sm", elem_id="edit-defaults")

    with gr.Column(visible=False, elem_id="edit-results-group") as results_group:
        gr.Markdown("## Results", elem_id="edit-results-header")
        with gr.Row():
            zoom_x = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: horizontal (%)", elem_id="edit-zoom-x")
            zoom_y = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: vertical (%)", elem_id="edit-zoom-y")
            window = gr.Dropdown(choices=list(ZOOM_WINDOWS), value=DEFAULT_WINDOW, label="Zoom window (px, shown 1:1)",
                                 elem_id="edit-zoom-window")
        zoom_caption = gr.Markdown("", elem_id="edit-zoom-caption")
        failed = gr.Markdown("", elem_id="edit-failed")
        with gr.Row(elem_id="edit-results"):
            with gr.Column(min_width=0, elem_id="result-input", elem_classes=["result-tile"]):
                input_preview = gr.Image(label="input (zoom box drawn)", format="png", interactive=False,
                                         height=PREVIEW_HEIGHT, elem_id="preview-input", buttons=[])
                input_crop = gr.Image(label="input, resized to the crop", format="png", interactive=False,
                                      elem_id="zoom-input", elem_classes=["zoom-1to1"], buttons=[])
            tiles: list[ResultTile] = []
            for name in pipeline.METHODS:
                with gr.Column(visible=False, min_width=0, elem_id=f"result-{name}",
                               elem_classes=["result-tile"]) as column:
                    tiles.append(ResultTile(
                        name, column,
                        gr.Image(label=name, format="png", interactive=False, height=PREVIEW_HEIGHT,
                                 elem_id=f"preview-{name}", buttons=["fullscreen"]),
                        gr.Image(label=f"{name} (zoom, 1:1)", format="png", interactive=False, elem_id=f"zoom-{name}",
                                 elem_classes=["zoom-1to1"], buttons=[]),
                        gr.Markdown(elem_id=f"metrics-{name}"),
                        gr.DownloadButton("Download full-resolution PNG", visible=False, elem_id=f"download-{name}"),
                    ))
        with gr.Accordion("Reports (JSON): every parameter and measurement", open=False):
            reports = gr.JSON(label="reports", elem_id="edit-reports")
    # one line per method at the page's full width (in the narrow input column each took three)
    guide = gr.Markdown(guide_markdown(first_size), elem_id="edit-method-guide")
    state = gr.State(None)
    ticket = gr.State(None)
    waiting_timer = gr.Timer(1.0, active=False)
    example_timer = gr.Timer(2.0, active=False)

    by_kind = {}
    for e in examples:
        by_kind.setdefault(e.kind, []).append([str(e.path), e.instruction])
    labels = {"synthedit": "Examples: SynthEdit scenes (the domain of the bundled mini set)",
              "look": "Examples: looks on photos (held-out photos)", "photo": "Examples: photos"}
    example_sets = []
    with gr.Row(equal_height=False, elem_id="edit-examples"):
        for kind, rows in by_kind.items():
            with gr.Column(min_width=320):
                example_sets.append(gr.Examples(rows, inputs=[image, instruction], label=labels.get(kind, kind),
                                                examples_per_page=len(rows)))
    api_run = gr.Button(visible=False, elem_id="edit-api")  # carries the public /edit endpoint

    # -- showing a comparison ---------------------------------------------------------------------
    def idle() -> gr.Button:
        return gr.Button("Run", interactive=info is not None)

    column_outputs = [x for t in tiles for x in t.components()]
    shown = [run, status, seed, slider, slider_method, files, reports, state, results_group, failed, zoom_caption,
             input_preview, input_crop, *column_outputs]

    def cleared(message: str, kind: str = "info") -> dict:
        """Everything a previous run left on the page, emptied."""
        out = {status: _status(kind, message), slider: None, slider_method: gr.Radio(choices=[], visible=False),
               files: gr.File(value=None, visible=False), reports: None, state: None,
               results_group: gr.Column(visible=False), failed: "", zoom_caption: ""}
        for t in tiles:
            out.update({t.column: gr.Column(visible=False), t.preview: None, t.crop: None, t.metrics: "",
                        t.download: gr.DownloadButton(value=None, visible=False)})
        return out

    def showing(c: compare.Comparison, message: str, x: float, y: float, win: int) -> dict:
        ok = [o for o in c.outputs if o.ok]
        out = cleared("")
        out[status] = _status("done" if ok else "error", message)
        out[state] = c.to_state()
        out[reports] = {o.method: {"error": o.error, **o.report} for o in c.outputs}
        out[failed] = compare.failed_line(c)
        out[results_group] = gr.Column(visible=True)
        if ok:
            out[slider] = (str(c.source_preview), str(ok[0].preview))
            out[slider_method] = gr.Radio(choices=[o.method for o in ok], value=ok[0].method, visible=len(ok) > 1)
            out[files] = gr.File(value=[str(o.path) for o in ok], visible=True)
        out.update(zoomed(c, x, y, win))
        for t in tiles:
            o = c.get(t.method)
            if o is not None and o.ok:
                out[t.column] = gr.Column(visible=True)
                out[t.metrics] = compare.metrics_markdown(o)
                out[t.download] = gr.DownloadButton(value=str(o.path), visible=True)
        return out

    def zoomed(c: compare.Comparison, x: float, y: float, win: int) -> dict:
        box = compare.crop_box(c.output_size, x, y, int(win))
        reference, crops = compare.zoom(c, x, y, int(win))
        out = {zoom_caption: compare.box_caption(c, x, y, int(win)), input_crop: reference,
               input_preview: compare.preview_with_box(c.source_preview, c.output_size, box)}
        for t in tiles:
            o = c.get(t.method)
            if o is not None and o.ok:
                out[t.preview] = compare.preview_with_box(o.preview, c.output_size, box)
                out[t.crop] = crops.get(t.method)
        return out

    # -- checks shared by the page and the API ----------------------------------------------------
    def problem(image_path, text, chosen) -> str | None:
        if load_error:
            return f"Model set {models!r} is not available: {load_error}"
        if isinstance(image_path, UnusableUpload):
            return image_path.message
        if not image_path:
            return "Upload an image or pick an example first."
        if not (text or "").strip():
            return "The instruction is empty: say what to change, e.g. \"make the circle green\"."
        if not chosen:
            return "Choose at least one method."
        return None

    def settings_key(image_path, text, order, size_value, seed_value, n_steps, t_guidance, i_guidance):
        return results_cache.key(image_path, models=models, instruction=text.strip(), methods=order, size=size_value,
                                 seed=seed_value, steps=int(n_steps), text_guidance=round(float(t_guidance), 4),
                                 image_guidance=round(float(i_guidance), 4))

    def compute(image_path, text, order, size_value, seed_value, n_steps, t_guidance, i_guidance, on_step=None,
                root: Path | None = None) -> compare.Comparison:
        with RUN_LOCK:
            c = compare.run_comparison(
                image_path, text, order, size=size_value, models=models, seed=seed_value, steps=int(n_steps),
                text_guidance=float(t_guidance), image_guidance=float(i_guidance), root=root or cache, on_step=on_step,
                device=device, dtype=dtype)
        for o in c.outputs:
            if o.report.get("total_seconds") and o.ok:
                costs.observe(o.method, tuple(c.output_size), o.report["total_seconds"])
        results_cache.put(settings_key(image_path, text, order, size_value, seed_value, n_steps, t_guidance,
                                       i_guidance), c)
        return c

    # -- the preloaded example, computed once in the background -----------------------------------
    def precompute() -> None:
        try:
            if first is not None and info is not None:
                compute(str(first.path), first.instruction, [DEFAULT_METHOD], default_size, 0, d_steps, d_text,
                        d_image, root=cache / "examples-results")
        except Exception:  # the page still works; the visitor just presses Run
            traceback.print_exc()
        finally:
            ready.set()
        try:
            if model_set is not None:
                with RUN_LOCK:
                    for key in (default_size, *(v for _, v in sizes)):
                        direct_seconds(output_size(None, key))  # warm the per-size cache off the page's path
                costs.direct = direct_seconds
        except Exception:  # then ip2p-direct keeps the benchmark's estimate
            traceback.print_exc()

    # not a daemon: Python waits for this bounded job at exit instead of killing it inside a torch
    # kernel, which aborts the process ("terminate called without an active exception", status 134)
    threading.Thread(target=precompute, name="example-result").start()

    def example_result(image_path, text, chosen, size_value, seed_value, n_steps, t_guidance, i_guidance, x, y, win):
        if problem(image_path, text, chosen) is not None:
            return None
        order = [m for m in pipeline.METHODS if m in (chosen or [])]
        hit = results_cache.get(settings_key(image_path, text, order, size_value, int(seed_value or 0), n_steps,
                                             t_guidance, i_guidance))
        if hit is None:
            return None
        return showing(hit, "**Example result** (computed when the app started). Press **Run** to edit it again, "
                            "change the instruction, or pick another example below.", x, y, win)

    def on_load(image_path, text, chosen, size_value, seed_value, n_steps, t_guidance, i_guidance, x, y, win,
                request: gr.Request):
        """Estimates for this page, and the preloaded example's result: at once when it is ready,
        otherwise the example timer shows it when it is (the page is usable meanwhile). A queued
        load can finish after the visitor's first click: then it leaves the status and results be."""
        if request.session_hash in acted:
            return {example_timer: gr.skip()}  # nothing stale; Gradio wants at least one output in a dict
        labels_update, guide_text, estimate_text = plan(image_path, size_value, chosen)
        out = {methods: labels_update, guide: guide_text, estimate: estimate_text}
        if not ready.is_set():
            return {**out, example_timer: gr.Timer(active=True),
                    status: _status("busy", "Computing the first example's result (started with the app)…")}
        shown_result = example_result(image_path, text, chosen, size_value, seed_value, n_steps, t_guidance,
                                      i_guidance, x, y, win)
        if request.session_hash in acted:  # the visitor acted while this was computed
            return {example_timer: gr.skip()}
        return {**out, **(shown_result or {status: _status("info", "Press **Run** to edit the example.")})}

    def on_example_tick(state_value, ticket_id, image_path, text, chosen, size_value, seed_value, n_steps,
                        t_guidance, i_guidance, x, y, win, request: gr.Request):
        if request.session_hash in acted or state_value is not None or ticket_id is not None:
            return {example_timer: gr.Timer(active=False)}  # the visitor has moved on
        if not ready.is_set():
            return {example_timer: gr.skip()}  # Gradio wants at least one output in a dict
        labels_update, guide_text, estimate_text = plan(image_path, size_value, chosen)
        shown_result = example_result(image_path, text, chosen, size_value, seed_value, n_steps, t_guidance,
                                      i_guidance, x, y, win)
        if request.session_hash in acted:
            return {example_timer: gr.Timer(active=False)}
        return {example_timer: gr.Timer(active=False), methods: labels_update, guide: guide_text,
                estimate: estimate_text, **(shown_result or {status: _status("info", "Press **Run** to edit the example.")})}

    # -- Run from the page ------------------------------------------------------------------------
    def waiting_message(ticket_id) -> str:
        n, seconds = queue.ahead(ticket_id)
        if n == 0:
            return _status("busy", "Starting…", 0.0)
        edits = f"{n} edit{'s' if n > 1 else ''}"
        when = f", about {duration(seconds)} of work by the cost model" if seconds is not None else ""
        return _status("busy", f"Waiting: {edits} ahead of yours{when}. One edit runs at a time.", 0.0)

    def on_click(image_path, text, chosen, size_value, request: gr.Request):
        """Instant (not queued): clear the last run, show the button's state, take a ticket."""
        acted.mark(request.session_hash)
        message = problem(image_path, text, chosen)
        if message:
            return {**cleared(sentence(message), "error"), ticket: None}
        order = [m for m in pipeline.METHODS if m in chosen]
        ticket_id = queue.join(costs.total(order, output_size(image_path, size_value)))
        n, _ = queue.ahead(ticket_id)
        return {**cleared(""), status: waiting_message(ticket_id), ticket: ticket_id,
                run: gr.Button(f"Waiting ({n} ahead)…" if n else "Starting…", interactive=False),
                waiting_timer: gr.Timer(active=bool(n))}

    def on_wait_tick(ticket_id):
        if ticket_id is None or not queue.waiting(ticket_id):
            return {waiting_timer: gr.Timer(active=False), status: gr.skip(), run: gr.skip()}
        n, _ = queue.ahead(ticket_id)
        return {status: waiting_message(ticket_id), run: gr.Button(f"Waiting ({n} ahead)…", interactive=False),
                waiting_timer: gr.skip()}

    def on_run_page(ticket_id, image_path, text, chosen, size_value, seed_value, randomise_seed, n_steps,
                    t_guidance, i_guidance, x, y, win):
        if ticket_id is None:  # on_click refused the input and said why
            yield {run: idle()}
            return
        queue.start(ticket_id)
        try:
            seed_value = random.randint(0, 2**31 - 1) if randomise_seed else int(seed_value or 0)
            order = [m for m in pipeline.METHODS if m in chosen]
            hit = results_cache.get(settings_key(image_path, text, order, size_value, seed_value, n_steps,
                                                 t_guidance, i_guidance))
            if hit is not None:
                yield {**showing(hit, "**Done** (this example with these settings ran before: shown from the cache; "
                                      "change the seed or any setting to run it again).", x, y, win),
                       seed: seed_value, run: idle()}
                return
            size_px = output_size(image_path, size_value)
            total = costs.total(order, size_px)
            progress = {"text": f"{order[0]}: starting", "fraction": 0.0}

            def on_step(method: str, stage: str, done: int, total_steps: int) -> None:
                index = order.index(method)
                part = done / max(total_steps, 1)
                progress["text"] = compare.progress_text(method, stage, done, total_steps, index + 1, len(order))
                progress["fraction"] = (index + part) / len(order)

            outcome: dict = {}
            started = time.monotonic()

            def work():
                try:
                    outcome["c"] = compute(image_path, text, order, size_value, seed_value, n_steps, t_guidance,
                                           i_guidance, on_step=on_step)
                except Exception as err:  # reported below, in the status box
                    outcome["error"] = err

            worker = threading.Thread(target=work, name="edit", daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(0.4)
                elapsed = time.monotonic() - started
                est = f" of about {duration(total)}" if total else ""
                pct = int(100 * progress["fraction"])
                yield {status: _status("busy", f"{progress['text']} · {elapsed:.0f} s{est}", progress["fraction"]),
                       run: gr.Button(f"Running… {pct}%", interactive=False), seed: seed_value}
            if "error" in outcome:
                err = outcome["error"]
                message = sentence(str(err), str(image_path)) if isinstance(err, InputError) else \
                    f"The edit failed unexpectedly ({type(err).__name__}); the server log has the details."
                if not isinstance(err, InputError):
                    traceback.print_exception(err)
                yield {**cleared(message, "error"), run: idle()}
                return
            c = outcome["c"]
            yield {**showing(c, compare.summary_markdown(c, time.monotonic() - started), x, y, win), seed: seed_value,
                   run: idle()}
        finally:
            queue.finish(ticket_id)

    # -- the public /edit endpoint: same work, errors raised to the caller -------------------------
    def on_run_api(image_path, text, chosen, size_value, seed_value, randomise_seed, n_steps, t_guidance, i_guidance,
                   progress=gr.Progress()):
        message = problem(image_path, text, chosen)
        if message:
            raise gr.Error(sentence(message))
        seed_value = random.randint(0, 2**31 - 1) if randomise_seed else int(seed_value or 0)
        order = [m for m in pipeline.METHODS if m in chosen]

        def on_step(method: str, stage: str, done: int, total: int) -> None:
            progress((done, total), desc=compare.progress_text(method, stage, done, total, order.index(method) + 1,
                                                               len(order)), unit="")

        started = time.monotonic()
        try:
            c = compute(image_path, text, order, size_value, seed_value, n_steps, t_guidance, i_guidance, on_step)
        except InputError as err:
            raise gr.Error(sentence(str(err), str(image_path))) from None
        ok = [o for o in c.outputs if o.ok]
        return (seed_value, (str(c.source_preview), str(ok[0].preview)) if ok else None,
                compare.summary_markdown(c, time.monotonic() - started), [str(o.path) for o in ok] or None,
                {o.method: {"error": o.error, **o.report} for o in c.outputs})

    # -- smaller handlers ---------------------------------------------------------------------------
    def on_upload(image_path, request: gr.Request):
        acted.mark(request.session_hash)
        if isinstance(image_path, UnusableUpload):
            return {**cleared(image_path.message, "error"), image: None}
        message = check_file(image_path) if image_path else None
        if message:
            return {**cleared(message, "error"), image: None}
        return cleared("New image: say what to change and press **Run**.")

    def on_example(request: gr.Request):
        acted.mark(request.session_hash)
        return cleared("Example loaded: press **Run** (or change the instruction first).")

    def on_clear(request: gr.Request) -> None:
        acted.mark(request.session_hash)

    def on_slider_method(state_value, method):
        c = compare.Comparison.from_state(state_value) if state_value else None
        out = c.get(method) if c and method else None
        return (str(c.source_preview), str(out.preview)) if out and out.ok else gr.ImageSlider()

    def on_zoom(state_value, x, y, win):
        if not state_value:
            return {zoom_caption: gr.skip()}
        c = compare.Comparison.from_state(state_value)
        try:
            return zoomed(c, x, y, win)
        except FileNotFoundError:
            gr.Warning("These results were cleared to free disk space; run the edit again to zoom.")
            return {zoom_caption: gr.skip()}

    def on_select(state_value, evt: gr.SelectData):
        """A click on any preview picks the zoom centre (previews share the output's aspect ratio)."""
        if not state_value or evt is None or evt.index is None:
            return gr.Slider(), gr.Slider()
        c = compare.Comparison.from_state(state_value)
        pw, ph = compare.preview_size(tuple(c.output_size))
        return round(100 * evt.index[0] / pw, 1), round(100 * evt.index[1] / ph, 1)

    def random_guidance():
        def pick(default: float, low: float, high: float, step: float, top: float) -> float:
            value = random.uniform(max(low, 0.5 * default), min(top, max(high, 2 * default)))
            return round(round(value / step) * step, 2)
        return pick(d_text, 1.0, 3.0, 0.1, 15), pick(d_image, 1.0, 2.0, 0.05, 5)

    # -- wiring -------------------------------------------------------------------------------------
    run_inputs = [image, instruction, methods, size, seed, randomise, steps, text_guidance, image_guidance]
    zoom_inputs = [zoom_x, zoom_y, window]
    run.click(None, js=SCROLL_TO_OUTPUT)
    run.click(on_click, inputs=[image, instruction, methods, size], outputs=[*shown, ticket, waiting_timer],
              queue=False, show_progress="hidden", api_visibility="private").then(
        on_run_page, inputs=[ticket, *run_inputs, *zoom_inputs], outputs=shown, concurrency_limit=1,
        concurrency_id="edit", show_progress="hidden", api_visibility="private")
    waiting_timer.tick(on_wait_tick, inputs=[ticket], outputs=[waiting_timer, status, run], queue=False,
                       show_progress="hidden", api_visibility="private")
    api_run.click(on_run_api, inputs=run_inputs, outputs=[seed, slider, status, files, reports], api_name="edit",
                  concurrency_limit=1, concurrency_id="edit")

    image.upload(on_upload, inputs=[image], outputs=[*shown, image], show_progress="hidden", api_visibility="private")
    for event in (image.change, size.change):
        event(plan, inputs=[image, size, methods], outputs=[methods, guide, estimate], show_progress="hidden",
              api_visibility="private")
    methods.input(lambda im, s, ch: estimate_line(ch, output_size(im, s)), inputs=[image, size, methods],
                  outputs=estimate, show_progress="hidden", api_visibility="private")
    for ex in example_sets:
        ex.dataset.click(None, js=SCROLL_TO_INPUT)
        ex.dataset.click(on_example, outputs=shown, queue=False, show_progress="hidden", api_visibility="private")
    image.clear(on_clear, queue=False, show_progress="hidden", api_visibility="private")
    seed_dice.click(lambda: random.randint(0, 2**31 - 1), outputs=seed, queue=False, api_visibility="private")
    guidance_dice.click(random_guidance, outputs=[text_guidance, image_guidance], queue=False,
                        api_visibility="private")
    defaults.click(lambda: (0, d_steps, d_text, d_image), outputs=[seed, steps, text_guidance, image_guidance],
                   queue=False, api_visibility="private")

    slider_method.input(on_slider_method, inputs=[state, slider_method], outputs=slider, api_visibility="private")
    zoom_outputs = [zoom_caption, input_crop, input_preview] + [x for t in tiles for x in (t.preview, t.crop)]
    for control in (zoom_x, zoom_y):
        control.release(on_zoom, inputs=[state, *zoom_inputs], outputs=zoom_outputs, api_visibility="private")
    window.input(on_zoom, inputs=[state, *zoom_inputs], outputs=zoom_outputs, api_visibility="private")
    for preview in [input_preview] + [t.preview for t in tiles]:
        preview.select(on_select, inputs=[state], outputs=[zoom_x, zoom_y], api_visibility="private").then(
            on_zoom, inputs=[state, *zoom_inputs], outputs=zoom_outputs, api_visibility="private")
    load_inputs = [*run_inputs[:5], *run_inputs[6:], *zoom_inputs]
    load_outputs = [*shown, methods, guide, estimate, example_timer]
    if page is not None:
        page.load(on_load, inputs=load_inputs, outputs=load_outputs, show_progress="hidden", api_visibility="private")
    example_timer.tick(on_example_tick, inputs=[state, ticket, *load_inputs], outputs=load_outputs,
                       show_progress="hidden", api_visibility="private")
