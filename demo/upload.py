"""The input image component: every upload goes through the pipeline's own check.

Gradio opens an uploaded file with PIL in the component's `preprocess`, before any handler runs, and
reports a failure as "Could not preprocess input component ..." with the server's temp path.
Wrapping one instance's `preprocess` is not enough: Gradio rebuilds the component for a session
from its class whenever a handler updates it (an example click does), and the rebuilt copy has the
plain method. So the check lives in a subclass: `CheckedImage.preprocess` never raises; a file that
cannot be used becomes an `UnusableUpload` carrying the sentence from `pipeline.inputs.load_image`,
and the handlers show that sentence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import gradio as gr
from gradio import component_meta

from pipeline.inputs import InputError, load_image

NOT_AN_IMAGE = "The file is not an image that can be read (PNG, JPEG, WebP, ...)."


@dataclass(frozen=True)
class UnusableUpload:
    """What the handlers get instead of a path when the upload cannot be used."""

    message: str

    def __bool__(self) -> bool:  # a handler's "no image" test must not mistake it for an image
        return True


def sentence(message: str, *paths: str | None) -> str:
    """One plain sentence for the page: capitalised, ending in a full stop, no server paths, no
    library names."""
    for path in paths:
        if path:
            message = message.replace(str(path), "the file")
    message = re.sub(r"(/[\w.\-]+){2,}", "the file", message)      # any other absolute path
    message = message.replace(" PIL can read", " that can be read")
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def check_file(path: str) -> str | None:
    """The sentence saying why the file at `path` cannot be edited, or None when it can."""
    try:
        load_image(path)
    except InputError as err:
        return sentence(str(err), path)
    except Exception:  # what an odd file raises varies; the visitor gets one sentence
        return NOT_AN_IMAGE
    return None


def _define():
    # Gradio writes a `.pyi` stub next to the module of every component class it sees defined;
    # this subclass adds no constructor arguments or events, so the stub is not wanted here.
    real = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        class CheckedImage(gr.Image):
            is_template = True  # the page draws it with Gradio's own Image component

            def preprocess(self, payload):
                try:
                    return super().preprocess(payload)
                except Exception:
                    path = getattr(payload, "path", None)
                    return UnusableUpload((check_file(path) if path else None) or NOT_AN_IMAGE)
    finally:
        component_meta.create_or_modify_pyi = real
    return CheckedImage


CheckedImage = _define()
