"""The browser app: see what a vision model attends to (Gradio UI over the `attention` library).

`build_demo()` returns the `gr.Blocks`; `viz_app.cli.main()` is ``python app.py``.
Modules: `state` (session cache), `models` (model manager), `views` (which map, drawn how),
`callbacks` (plain functions behind every event), `analysis_plots` (diagnostics, faithfulness),
`examples` (the gallery), `ui` (layout and wiring only), `cli` (command line).
"""


def build_demo(*args, **kwargs):
    from .ui import build_demo as _build
    return _build(*args, **kwargs)


__all__ = ["build_demo"]
