"""Gradio components adapted to Classifr."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

logger = logging.getLogger(__name__)


class ImageFileInput(gr.Image):
    """An image input (upload, webcam, clipboard) that hands the event the uploaded file's path.

    gr.Image opens every upload with Pillow before the event runs: an unreadable file or a
    decompression bomb would then fail inside Gradio with no readable message, and a whole batch
    with it. Classifr decodes images itself (`classifr.core.images`: limits, JPEG draft mode, every
    mode), so this input passes the path through untouched. Create it with `type="filepath"` and
    `image_mode=None` (Gradio records constructor arguments by signature, so no __init__ here).
    Gradio writes a `components.pyi` typing stub beside this file on import; it is git-ignored.
    """

    def get_block_name(self) -> str:
        return "image"  # render with gr.Image's own frontend

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        if getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)  # base64 data URLs (some webcam/clipboard paths)
