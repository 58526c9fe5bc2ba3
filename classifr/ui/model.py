"""The Model tab: the card of the serving version (or any other): architecture, labels, data, metrics, lineage.

Read-only and public: the API `model_card` takes a version ("" for the serving one) and returns
the card's Markdown, the confusion matrix and the full overview as JSON.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from classifr.app.service import ClassifrService
from classifr.ui.errors import shows_errors
from classifr.ui.study import build_benchmark_section
from classifr.versions.card_markdown import render_markdown
from classifr.versions.overview import ModelOverview

logger = logging.getLogger(__name__)


def version_choices(service: ClassifrService) -> list[tuple[str, str]]:
    """(shown, value) pairs, newest first, e.g. ("v3 · production · serving", "v3")."""
    serving = service.serving_version
    if not service.has_registry:
        return [(f"{serving} · serving", serving)]
    choices = []
    for info in reversed(service.list_versions()):
        tags = list(info.aliases) + (["serving"] if info.version == serving else [])
        choices.append((" · ".join([info.version, *tags]), info.version))
    return choices


def make_model_card(service: ClassifrService):
    @shows_errors  # an unknown version, a broken registry record
    def model_card(version: str | None) -> tuple[str, Image.Image | None, dict[str, Any]]:
        overview = service.model_card(version or None)
        return render_markdown(overview), _picture(overview), overview.to_json()

    return model_card


def _picture(overview: ModelOverview) -> Image.Image | None:
    """The confusion matrix as a picture (a PIL image: the registry may lie outside Gradio's allowed paths)."""
    if overview.confusion_matrix is None:
        return None
    try:
        with Image.open(overview.confusion_matrix) as image:
            return image.convert("RGB")
    except OSError as err:
        logger.warning("cannot open %s: %s", overview.confusion_matrix, err)
        return None


class OnnxDownloads:
    """A version's verified ONNX graph as a file Gradio may serve, named `<version>.onnx`.

    Gradio serves only files under its allowed paths, the working directory or the temp folder,
    and a registry may live anywhere (/data on a Space, a Hub cache): each graph is linked (or
    copied, across file systems) once into a private temp folder. Versions are immutable, so a
    link made once stays right. One instance per app, shared by its sessions; a lock guards it.
    """

    def __init__(self, service: ClassifrService) -> None:
        self.service = service
        self._folder: Path | None = None
        self._lock = threading.Lock()

    def path(self, ref: str | None) -> str | None:
        """The downloadable file for `ref` (default: the serving version), or None without a verified export."""
        export = self.service.onnx_export(ref or None)
        if export is None:
            return None
        version, source = export
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="classifr-onnx-"))
            self._folder.mkdir(parents=True, exist_ok=True)  # a temp cleaner may have removed it
            target = self._folder / f"{version}.onnx"
            if not target.is_file():
                partial = target.with_name(f".{target.name}.partial")
                partial.unlink(missing_ok=True)
                try:
                    os.link(source, partial)
                except OSError:  # another file system, or links not allowed
                    shutil.copyfile(source, partial)
                os.replace(partial, target)
        return str(target)

    def button(self, ref: str | None) -> dict:
        path = self.path(ref)
        version = Path(path).stem if path else None
        return gr.update(value=path, visible=path is not None, label=f"Download ONNX ({version})" if version else "Download ONNX")


def build_model_tab(service: ClassifrService, demo: gr.Blocks) -> None:
    with gr.Row():
        version = gr.Dropdown(
            choices=version_choices(service), value=service.serving_version, label="Version",
            interactive=service.has_registry, elem_id="model-version", scale=3,
            # Versions published after start-up must be accepted too; unknown ones get a readable error.
            allow_custom_value=True,
        )
        refresh = gr.Button("Refresh", scale=1)
        downloads = OnnxDownloads(service)
        # The verified ONNX graph of the selected version (onnxruntime, dynamic batch); hidden without one.
        onnx_file = gr.DownloadButton("Download ONNX", visible=False, scale=1, elem_id="model-onnx-download")
    card = gr.Markdown(elem_id="model-card")
    with gr.Accordion("Confusion matrix (held-out test split)", open=False):
        confusion = gr.Image(
            label="Confusion matrix", type="pil", format="png", interactive=False, buttons=["download", "fullscreen"],
            placeholder="No confusion matrix: this version was not evaluated by Classifr.",
        )
    with gr.Accordion("Full overview (JSON)", open=False):
        payload = gr.JSON(label="Overview")
    build_benchmark_section(service, demo)
    model_card = make_model_card(service)
    outputs = [card, confusion, payload]

    def choices(selected: str | None) -> dict:
        options = version_choices(service)
        values = {value for _, value in options}
        return gr.update(choices=options, value=selected if selected in values else service.serving_version)

    def on_load() -> tuple[dict, str, Image.Image | None, dict[str, Any]]:
        return (choices(None), *model_card(None))

    refresh.click(choices, inputs=version, outputs=version, api_visibility="undocumented").then(
        model_card, inputs=version, outputs=outputs, api_name="model_card"
    )
    version.input(model_card, inputs=version, outputs=outputs, api_visibility="undocumented")
    demo.load(on_load, outputs=[version, *outputs], api_visibility="undocumented")
    gr.on([demo.load, version.change], downloads.button, inputs=version, outputs=onnx_file, api_visibility="undocumented")
