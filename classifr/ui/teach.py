"""The Teach tab: create categories and add many example images, with a result per file."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from classifr.app.service import ClassifrService
from classifr.core.text import escape_markdown as inert
from classifr.data.dataset import NEW_CATEGORY, AddResult
from classifr.ui.errors import shows_errors
from classifr.ui.feedback import storage_notice, username_of
from classifr.ui.storing import paused_notice

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["file", "result", "reason", "label", "split"]
CATEGORY_COLUMNS = ["category", "status", "images", "train", "test", "import", "upload", "correction", "confirmation"]


def result_rows(results: list[AddResult]) -> list[list[str]]:
    return [[r.name, r.status, r.reason or "", r.label or "", r.split or ""] for r in results]


def summary(results: list[AddResult]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("added", "duplicate", "rejected")}
    return (
        f"**{counts['added']} added**, {counts['duplicate']} already in the dataset, "
        f"{counts['rejected']} rejected (see the reason per file)."
    )


def make_add_examples(service: ClassifrService):
    @shows_errors
    def add_examples(
        files: list[str] | None, category: str | None, new_name: str | None, request: gr.Request,
        profile: gr.OAuthProfile | None, progress: gr.Progress = gr.Progress(),
    ):
        if not files:
            raise gr.Error("Drop one or more images first.")
        label = new_name if category == NEW_CATEGORY else category
        if not label:
            raise gr.Error("Choose a category, or choose 'New category…' and type its name.")
        done: list[AddResult] = []

        def tick(result: AddResult) -> None:
            done.append(result)
            progress(len(done) / len(files), desc=f"{len(done)} of {len(files)} images")

        results = service.add_examples(
            files, label, contributor=username_of(request, profile), names=[Path(f).name for f in files], on_result=tick
        )
        logger.info("add_examples: %d files for %r", len(files), label)
        stored_as = next((r.label for r in results if r.label), category)
        return result_rows(results), summary(results), *refresh_categories(service, selected=stored_as)

    return add_examples


def category_rows(service: ClassifrService) -> list[list]:
    rows = []
    for c in service.categories():
        sources = [c.by_source.get(s, 0) for s in ("import", "upload", "correction", "confirmation")]
        status = "pending" if c.pending else "known"
        rows.append([c.name, status, c.total, c.by_split.get("train", 0), c.by_split.get("test", 0), *sources])
    return rows


def refresh_categories(service: ClassifrService, selected: str | None = None):
    """The categories table and the category choice, refreshed (a new category is usable at once)."""
    choices = [NEW_CATEGORY, *service.label_choices()]
    return category_rows(service), gr.update(choices=choices, value=selected)


def make_create_category(service: ClassifrService):
    @shows_errors
    def create_category(name: str | None, request: gr.Request, profile: gr.OAuthProfile | None):
        category = service.create_category(name or "", contributor=username_of(request, profile))
        rows, choice = refresh_categories(service, selected=category.name)
        return f"Created the category *{inert(category.name)}*; it is pending until a model version learns it.", rows, choice

    return create_category


def sync_status(service: ClassifrService) -> str:
    """One line on the Hub dataset sync, for maintainers: where, when last pushed, the last error."""
    status = service.sync_status()
    if status is None:
        return "The project dataset is kept locally (set CLASSIFR_DATASET_REPO to push it to the Hub)."
    text = f"Pushed to the Hub dataset `{status['repo_id']}` every {status['every_minutes']:g} minutes"
    text += f"; last push {status['last_push_at']}." if status["last_push_at"] else "; nothing pushed yet."
    if status["last_error"]:
        text += f" **Last push failed** ({status['last_error_at']}): {inert(status['last_error'])}"
    return text


def build_teach_tab(service: ClassifrService, demo: gr.Blocks) -> None:
    gr.Markdown(
        "Teach the model a category: choose one (or create a new one), drop example photos of it, "
        "and add them. Each photo is checked; duplicates and unreadable files are reported per file."
    )
    with gr.Row():
        with gr.Column():
            category = gr.Dropdown(
                [NEW_CATEGORY, *service.label_choices()], value=None, label="Category (type to search)",
                filterable=True, allow_custom_value=True, elem_id="teach-category",
            )
            new_name = gr.Textbox(label="New category name", max_length=64, visible=False, elem_id="teach-new-name")
            create = gr.Button("Create category", visible=False, elem_id="teach-create")
            # No file_types filter: every dropped file gets a result row, with the reason when refused.
            files = gr.File(label="Example images", file_count="multiple", elem_id="teach-files")
            add = gr.Button("Add to the dataset", variant="primary", elem_id="teach-add")
            gr.Markdown(storage_notice(service, "Adding stores these images"))
            paused = gr.Markdown(elem_id="teach-storage")
        with gr.Column():
            status = gr.Markdown(elem_id="teach-status")
            results = gr.Dataframe(headers=RESULT_COLUMNS, label="Per file", interactive=False, elem_id="teach-results")
    gr.Markdown("**Project categories.** *Pending*: the serving model does not know the category yet; retraining adds it.")
    categories = gr.Dataframe(headers=CATEGORY_COLUMNS, label="Project categories", interactive=False, elem_id="teach-categories")
    category.change(
        lambda c: (gr.update(visible=c == NEW_CATEGORY), gr.update(visible=c == NEW_CATEGORY)),
        inputs=category, outputs=[new_name, create], api_visibility="undocumented",
    )
    teach = dict(concurrency_limit=1, concurrency_id="teach-uploads")
    add.click(
        make_add_examples(service), inputs=[files, category, new_name], outputs=[results, status, categories, category],
        api_name="add_examples", **teach,
    ).then(lambda: paused_notice(service), outputs=paused, api_visibility="undocumented")
    create.click(
        make_create_category(service), inputs=new_name, outputs=[status, categories, category],
        api_name="create_category", **teach,
    )
    sync = gr.Markdown(elem_id="teach-sync")
    demo.load(lambda: refresh_categories(service), outputs=[categories, category], api_visibility="undocumented")
    demo.load(lambda: sync_status(service), outputs=sync, api_visibility="undocumented")
    demo.load(lambda: paused_notice(service), outputs=paused, api_visibility="undocumented")
