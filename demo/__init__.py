"""The Edit tab of the Gradio app and the pieces it is built from.

- `demo.edit_tab.render_edit_tab`: the tab (inputs, before/after slider, one column per method,
  synchronised full-resolution zoom, downloads); `app.py` mounts it next to Study and Results.
- `demo.compare`: runs the methods and describes their outputs (no Gradio; tested directly).
- `demo.examples`: SynthEdit scenes and scikit-image photos written into the cache at startup.
"""
