"""The Edit tab: one input, one instruction, several methods side by side at 1K / 2K / 4K.

`render_edit_tab(...)` builds the components inside the caller's current Blocks/Tab context, like
the Study and Results tabs. The Run button is the public API endpoint `/edit`; the result
columns, before/after slider and synchronised zoom are filled by a private follow-up event.
Handlers are thin; the work is in `demo.compare`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

import pipeline
from demo import compare
from demo.examples import write_examples
from pipeline.model_sets import ModelSetUnavailable, SetInfo, load_model_set

SIZES: tuple[tuple[str, str], ...] = (("1K (1024 px)", "1k"), ("2K (2048 px)", "2k"), ("4K (3840 px)", "4k"))
ZOOM_WINDOWS = (256, 384, 512, 768)
PREVIEW_HEIGHT = 300
DEFAULT_METHOD = "mobilepicasso"
HOW_TO = (
    "Upload an image (or pick an example below), say what to change, choose the methods and the output "
    "size, then **Run**. Each method gets a column with its latency, peak memory, U-Net evaluations and "
    "tiles. A 4K image cannot be judged at screen size: **click any result** (or move the zoom sliders) "
    "to see the same region of every output at full resolution. Downloads are the full-resolution PNGs."
)


def model_notice(name: str, info: SetInfo | None, error: str | None = None) -> str:
    """What the loaded model set is and what it can be expected to do, said plainly."""
    if info is None:
        return (f"**Model set `{name}` is not available here:** {error} Editing is disabled; start the app with "
                "`--models mini` (bundled, offline) or give it network access to the Hub.")
    lines = [f"**Model set:** `{info.name}`: {info.description}. **Trained on:** {info.trained_on}."]
    if not info.trained:
        lines.append(f"⚠️ **UNTRAINED**: {', '.join(info.untrained)} have random weights, so the edits are "
                     "noise. Latency, memory, U-Net evaluations and tiling are still real.")
    if info.name == "mini":
        lines.append("The bundled `mini` set knows synthetic shapes-on-texture scenes only: try the **SynthEdit** "
                     "examples. Photos will not edit well with it; for photos run the Space with the Hub set "
                     "(`MOBILEPICASSO_MODELS=sd15`, GPU).")
    return "  \n".join(lines)


def _sentence(message: str) -> str:
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def readable_upload(image: gr.Image) -> gr.Image:
    """Make an unreadable upload a one-sentence message instead of a processing error (Gradio opens
    the file with PIL before the handler sees it). Wraps the instance's method: a subclass would make
    Gradio write a `.pyi` stub next to this file."""
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception:  # what PIL raises for a file it cannot open varies by format
            raise gr.Error("The file is not an image that can be read (PNG, JPEG, WebP, ...).") from None

    image.preprocess = checked
    return image


@dataclass
class ResultColumn:
    method: str
    column: gr.Column
    preview: gr.Image
    crop: gr.Image
    metrics: gr.Markdown
    download: gr.DownloadButton

    def components(self) -> list:
        return [self.column, self.preview, self.crop, self.metrics, self.download]

    def hidden(self) -> list:
        return [gr.Column(visible=False), None, None, "", gr.DownloadButton(value=None, visible=False)]


def render_edit_tab(models: str = "mini", cache_dir: str | Path = "demo-cache",
                    sizes: tuple[tuple[str, str], ...] = SIZES, default_size: str = "4k") -> None:
    """Build the Edit tab in the current Blocks context; outputs and examples go under `cache_dir`."""
    cache = Path(cache_dir)
    try:
        info, load_error = load_model_set(models).info, None
    except ModelSetUnavailable as err:
        info, load_error = None, str(err)

    gr.Markdown("# MobilePicasso: instruction-based image editing at 4K\n" + HOW_TO, elem_id="edit-header")
    gr.Markdown(model_notice(models, info, load_error), elem_id="edit-model-set")

    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            image = readable_upload(gr.Image(label="Input image", type="filepath", image_mode=None,
                                             sources=["upload", "clipboard"], format="png", height=300,
                                             elem_id="edit-input"))
            instruction = gr.Textbox(label="Instruction", placeholder="e.g. make the circle green", lines=1,
                                     max_lines=3, elem_id="edit-instruction")
            methods = gr.CheckboxGroup(
                choices=[(name, name) for name in pipeline.METHODS], value=[DEFAULT_METHOD], label="Methods",
                info="MobilePicasso and the baselines; each one runs in turn, so every extra method adds its time.",
                elem_id="edit-methods")
            size = gr.Radio(choices=list(sizes), value=default_size, label="Output size (long side)",
                            elem_id="edit-size")
            with gr.Accordion("Settings", open=False, elem_id="edit-settings"):
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="edit-seed")
                    randomise = gr.Checkbox(value=False, label="Randomise seed", elem_id="edit-randomise")
                steps = gr.Slider(1, 100, value=info.steps if info else 20, step=1, label="Steps (edit stage)",
                                  elem_id="edit-steps")
                text_guidance = gr.Slider(0, 15, value=info.text_guidance if info else 7.5, step=0.1,
                                          label="Text guidance", elem_id="edit-text-guidance")
                image_guidance = gr.Slider(0, 5, value=info.image_guidance if info else 1.5, step=0.05,
                                           label="Image guidance", elem_id="edit-image-guidance")
            run = gr.Button("Run", variant="primary", interactive=info is not None, elem_id="edit-run")
        with gr.Column(scale=3, min_width=360):
            status = gr.Markdown("Results appear here.", label="edit status", elem_id="edit-status")
            slider = gr.ImageSlider(label="Before / after (preview; zoom below for full resolution)", type="filepath",
                                    format="png", max_height=560, interactive=False, elem_id="edit-slider")
            slider_method = gr.Radio(choices=[], label="After =", visible=False, elem_id="edit-slider-method")
            files = gr.File(label="All full-resolution PNGs", file_count="multiple", interactive=False,
                            visible=False, elem_id="edit-files")

    examples = write_examples(cache / "examples")
    with gr.Row(equal_height=False):
        for kind, label in (("synthedit", "SynthEdit scenes (the domain of the bundled mini set)"),
                            ("photo", "Photos (for the Hub set, sd15)")):
            rows = [[str(e.path), e.instruction] for e in examples if e.kind == kind]
            if rows:
                with gr.Column(min_width=320):
                    gr.Examples(rows, inputs=[image, instruction], label=label, examples_per_page=len(rows))

    with gr.Column(visible=False, elem_id="edit-results-group") as results_group:
        gr.Markdown("## Results", elem_id="edit-results-header")
        with gr.Row():
            zoom_x = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: horizontal (%)", elem_id="edit-zoom-x")
            zoom_y = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: vertical (%)", elem_id="edit-zoom-y")
            window = gr.Dropdown(choices=list(ZOOM_WINDOWS), value=384, label="Zoom window (px)",
                                 elem_id="edit-zoom-window")
        zoom_caption = gr.Markdown("", elem_id="edit-zoom-caption")
        with gr.Row(equal_height=False, elem_id="edit-results"):
            with gr.Column(min_width=220, elem_id="result-input"):
                input_preview = gr.Image(label="input", type="filepath", format="png", interactive=False,
                                         height=PREVIEW_HEIGHT, elem_id="preview-input")
                input_crop = gr.Image(label="input, resized (zoom)", format="png", interactive=False,
                                      elem_id="zoom-input")
            columns: list[ResultColumn] = []
            for name in pipeline.METHODS:
                with gr.Column(visible=False, min_width=220, elem_id=f"result-{name}") as column:
                    columns.append(ResultColumn(
                        name, column,
                        gr.Image(label=name, type="filepath", format="png", interactive=False,
                                 height=PREVIEW_HEIGHT, elem_id=f"preview-{name}"),
                        gr.Image(label=f"{name} (zoom, 1:1)", format="png", interactive=False, elem_id=f"zoom-{name}"),
                        gr.Markdown(elem_id=f"metrics-{name}"),
                        gr.DownloadButton("Download full-resolution PNG", visible=False, elem_id=f"download-{name}"),
                    ))
        with gr.Accordion("Reports (JSON): every parameter and measurement", open=False):
            reports = gr.JSON(label="reports", elem_id="edit-reports")
    state = gr.State(None)

    def on_run(image_path, text, chosen, size_value, seed_value, randomise_seed, n_steps, t_guidance, i_guidance,
               progress=gr.Progress()):
        if load_error:
            raise gr.Error(f"model set {models!r} is not available: {load_error}")
        if not image_path:
            raise gr.Error("Upload an image or pick an example first.")
        if not (text or "").strip():
            raise gr.Error("The instruction is empty: say what to change, e.g. \"make the circle green\".")
        if not chosen:
            raise gr.Error("Choose at least one method.")
        seed_value = random.randint(0, 2**31 - 1) if randomise_seed else int(seed_value or 0)
        order = [m for m in pipeline.METHODS if m in chosen]

        def on_step(method: str, stage: str, done: int, total: int) -> None:
            progress((done, total), desc=compare.progress_text(method, stage, done, total, order.index(method) + 1,
                                                               len(order)), unit="")

        progress(0, desc=f"{order[0]}: loading")
        try:
            result = compare.run_comparison(
                image_path, text, order, size=size_value, models=models, seed=seed_value, steps=int(n_steps),
                text_guidance=float(t_guidance), image_guidance=float(i_guidance), root=cache, on_step=on_step)
        except pipeline.InputError as err:
            raise gr.Error(_sentence(str(err))) from None
        first = next((o for o in result.outputs if o.ok), None)
        before_after = (str(result.source_preview), str(first.preview)) if first else None
        paths = [str(o.path) for o in result.outputs if o.ok]
        return (seed_value, before_after, compare.summary_markdown(result),
                paths or None,
                {o.method: {"error": o.error, **o.report} for o in result.outputs}, result.to_state())

    def on_results(state_value, x, y, win):
        c = compare.Comparison.from_state(state_value)
        ok = [o.method for o in c.outputs if o.ok]
        reference, crops = compare.zoom(c, x, y, int(win))
        updates = [gr.File(visible=bool(ok)), gr.Radio(choices=ok, value=ok[0] if ok else None, visible=len(ok) > 1),
                   compare.box_caption(c, x, y, int(win)) if ok else "",
                   gr.Column(visible=True), str(c.source_preview), reference]
        for col in columns:
            out = c.get(col.method)
            if out is None:
                updates += col.hidden()
                continue
            updates += [gr.Column(visible=True), out.preview and str(out.preview), crops.get(col.method),
                        compare.metrics_markdown(out),
                        gr.DownloadButton(value=str(out.path), visible=True) if out.ok
                        else gr.DownloadButton(value=None, visible=False)]
        return updates

    def on_slider_method(state_value, method):
        c = compare.Comparison.from_state(state_value) if state_value else None
        out = c.get(method) if c and method else None
        return (str(c.source_preview), str(out.preview)) if out and out.ok else gr.ImageSlider()

    def on_zoom(state_value, x, y, win):
        if not state_value:
            return ["", None] + [None] * len(columns)
        c = compare.Comparison.from_state(state_value)
        try:
            reference, crops = compare.zoom(c, x, y, int(win))
        except FileNotFoundError:
            gr.Warning("These results were cleared to free disk space; run the edit again to zoom.")
            return [gr.Markdown()] * (2 + len(columns))
        return [compare.box_caption(c, x, y, int(win)), reference] + [crops.get(col.method) for col in columns]

    def on_select(state_value, evt: gr.SelectData):
        """A click on any preview picks the zoom centre (previews share the output's aspect ratio)."""
        if not state_value or evt is None or evt.index is None:
            return gr.Slider(), gr.Slider()
        c = compare.Comparison.from_state(state_value)
        pw, ph = compare.preview_size(tuple(c.output_size))
        return round(100 * evt.index[0] / pw, 1), round(100 * evt.index[1] / ph, 1)

    column_outputs = [x for col in columns for x in col.components()]
    zoom_outputs = [zoom_caption, input_crop] + [col.crop for col in columns]
    run.click(
        on_run, inputs=[image, instruction, methods, size, seed, randomise, steps, text_guidance, image_guidance],
        outputs=[seed, slider, status, files, reports, state], api_name="edit", concurrency_limit=1,
        concurrency_id="edit",
    ).success(
        on_results, inputs=[state, zoom_x, zoom_y, window],
        outputs=[files, slider_method, zoom_caption, results_group, input_preview, input_crop, *column_outputs],
        api_visibility="private",
    )
    slider_method.input(on_slider_method, inputs=[state, slider_method], outputs=slider, api_visibility="private")
    for control in (zoom_x, zoom_y):
        control.release(on_zoom, inputs=[state, zoom_x, zoom_y, window], outputs=zoom_outputs,
                        api_visibility="private")
    window.input(on_zoom, inputs=[state, zoom_x, zoom_y, window], outputs=zoom_outputs, api_visibility="private")
    for preview in [input_preview] + [col.preview for col in columns]:
        preview.select(on_select, inputs=[state], outputs=[zoom_x, zoom_y], api_visibility="private").then(
            on_zoom, inputs=[state, zoom_x, zoom_y, window], outputs=zoom_outputs, api_visibility="private")
