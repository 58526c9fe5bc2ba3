"""The Versions view: every model version, its lineage, and which one is production."""

from __future__ import annotations

import logging

import gradio as gr

from classifr.app.service import ClassifrService

logger = logging.getLogger(__name__)

COLUMNS = ["version", "aliases", "labels", "parent", "created_at", "serving"]


def make_list_versions(service: ClassifrService):
    def list_versions() -> tuple[list[list], list[dict]]:
        serving = service.serving_version
        versions = service.list_versions()
        rows = [
            [v.version, ", ".join(v.aliases), v.num_labels, v.parent or "", v.created_at, "●" if v.version == serving else ""]
            for v in versions
        ]
        return rows, [v.to_json() for v in versions]

    return list_versions


def build_versions_tab(service: ClassifrService, demo: gr.Blocks) -> None:
    if not service.has_registry:
        gr.Markdown(f"Serving `{service.serving_version}` directly (CLASSIFR_MODEL); there is no registry.")
    table = gr.Dataframe(headers=COLUMNS, label="Model versions", interactive=False, elem_id="versions-table")
    refresh = gr.Button("Refresh")
    with gr.Accordion("Raw list (JSON)", open=False):
        payload = gr.JSON(label="Versions")
    list_versions = make_list_versions(service)
    refresh.click(list_versions, outputs=[table, payload], api_name="versions")
    demo.load(list_versions, outputs=[table, payload], api_visibility="undocumented")
