"""The load test's baseline: Classifr's /predict event in Gradio with no model behind it.

    GRADIO_SERVER_PORT=7861 python benchmarks/gradio_floor_app.py

The same input component (`ImageFileInput`: the upload's path, untouched), the same outputs
(Label, JSON, Markdown), the same batching and concurrency as the app's predict event; the
function only reads each upload's size. What gradio_client callers get from it per second is
what Gradio and the callers cost alone on this machine: the ceiling that any model served
through the same event shares the cores with. Its answer says plainly that no model ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from classifr.ui.components import ImageFileInput

MAX_BATCH = int(os.environ.get("CLASSIFR_MAX_BATCH", "8"))


def no_model(paths: list[str | None]) -> tuple[list, list, list]:
    """One answer per upload in the batch: its size in bytes, and that no model ran."""
    labels, payloads, statuses = [], [], []
    for path in paths:
        size = Path(path).stat().st_size if path else 0
        labels.append({"no model": 1.0})
        payloads.append({"predictions": [{"label": "no model", "score": 1.0}], "bytes": size})
        statuses.append(f"{size} bytes received; no model ran")
    return labels, payloads, statuses


def build() -> gr.Blocks:
    with gr.Blocks(title="Gradio floor") as demo:
        image = ImageFileInput(type="filepath", image_mode=None, label="Image")
        label, payload, status = gr.Label(), gr.JSON(), gr.Markdown()
        gr.on(
            triggers=[image.change], fn=no_model, inputs=image, outputs=[label, payload, status],
            api_name="predict", batch=True, max_batch_size=MAX_BATCH, concurrency_limit=1, concurrency_id="model",
        )  # fmt: skip
    return demo


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")  # as app.py sets it
    build().queue().launch(server_name="127.0.0.1")
