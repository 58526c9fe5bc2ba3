"""The Train tab, for maintainers: train a candidate in the background, compare it, promote or roll back.

Maintainer actions (APIs `train`, `cancel_training`, `promote`, `rollback`) need the password in
CLASSIFR_ADMIN_PASSWORD; without it they are switched off. Everyone may watch the progress.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import gradio as gr

from classifr.app import access
from classifr.core.errors import ClassifrError, VersionNotFoundError
from classifr.app.jobs import JobState, TrainingJobs
from classifr.app.service import ClassifrService
from classifr.core.text import escape_markdown

logger = logging.getLogger(__name__)

METRIC_ROWS = [
    ("accuracy", ("metrics", "accuracy")),
    ("macro F1", ("metrics", "macro_f1")),
    ("accuracy on labels the parent knows", ("comparison", "shared_accuracy_new")),
    ("churn against its parent", ("comparison", "churn")),
    ("eval images", ("metrics", "num_images")),
]


def require_maintainer(service: ClassifrService, password: str | None, oauth_token: gr.OAuthToken | None = None) -> None:
    """The password, or HF sign-in as a member of CLASSIFR_MAINTAINER_ORG; a gr.Error otherwise."""
    try:
        how = access.require_maintainer(
            service.settings, password=password, oauth_token=oauth_token.token if oauth_token else None,
            hf_api=service.hf_api,
        )
    except access.NotAMaintainerError as err:
        raise gr.Error(str(err)) from err
    logger.info("maintainer action allowed by %s", how)


def dataset_sources(text: str | None) -> list[str]:
    """External datasets for --dataset, one per line; the training run checks each one."""
    sources = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for source in sources:
        if source.startswith("-"):
            raise gr.Error(f"a dataset source cannot start with '-': {source!r}")
    return sources


def describe_job(state: JobState) -> str:
    if state.status == "idle":
        return "No training run yet."
    if state.status == "running":
        return f"**Training…** {escape_markdown(state.stage)} ({state.fraction:.0%})"
    if state.status == "succeeded" and state.outcome:
        o = state.outcome
        added = ", ".join(escape_markdown(x) for x in o["labels_added"]) or "none"
        verdict = "promoted to production" if o["promoted"] else "kept as candidate"
        gate = "" if o["gate"]["passed"] else " Gate: " + "; ".join(escape_markdown(r) for r in o["gate"]["reasons"])
        return (f"**{o['version']}** trained from {o['parent']}: accuracy {o['metrics']['accuracy']:.1%}, "
                f"new labels: {added}; {verdict}.{gate}")
    if state.status == "cancelled":
        return "Training was cancelled."
    return f"**Training failed:** {escape_markdown(state.error or 'unknown error')}"


def version_metrics(service: ClassifrService, ref: str) -> tuple[str, dict[str, Any]]:
    """(version, metrics.json) of an alias; empty metrics for versions not trained here (v1)."""
    try:
        version = service.registry.resolve(ref)
    except VersionNotFoundError:
        return "—", {}
    path = service.registry.local_path(version) / "metrics.json"
    return version, json.loads(path.read_text()) if path.is_file() else {}


def comparison_table(service: ClassifrService, left: str = "production", right: str = "candidate") -> dict:
    """The eval metrics of two versions (or aliases) side by side."""
    if service.registry is None:
        return {"headers": ["metric", left, right], "data": []}
    (a, p), (b, c) = version_metrics(service, left), version_metrics(service, right)
    rows = [[name, _value(p, path), _value(c, path)] for name, path in METRIC_ROWS]
    per_class = sorted(set(p.get("metrics", {}).get("per_class", {})) | set(c.get("metrics", {}).get("per_class", {})))
    rows += [[f"F1 of {label}", _f1(p, label), _f1(c, label)] for label in per_class]
    header = [f"{left} ({a})" if a != left else a, f"{right} ({b})" if b != right else b]
    return {"headers": ["metric", *header], "data": rows}


def _f1(metrics: dict, label: str) -> str:
    value = metrics.get("metrics", {}).get("per_class", {}).get(label, {}).get("f1")
    return "n/a" if value is None else f"{value:.1%}"


def _value(metrics: dict, path: tuple[str, str]) -> str:
    value = metrics.get(path[0], {}).get(path[1])
    if value is None:
        return "n/a"
    return f"{value:.1%}" if isinstance(value, float) else str(value)


def build_train_tab(service: ClassifrService, demo: gr.Blocks) -> None:
    jobs = TrainingJobs(service.settings.home)
    gr.Markdown(
        "Train a new version from production on the project dataset with the **head** strategy (frozen "
        "backbone, cached features: seconds to minutes on a CPU). It is published as `candidate`; "
        "*auto* promotes it only when it keeps accuracy on known labels and recognises every new label. "
        "Full fine-tuning runs on a GPU: `accelerate launch -m training.train --strategy full`."
    )
    password = gr.Textbox(label="Maintainer password", type="password", elem_id="train-password")
    with gr.Row():
        new_head = gr.Checkbox(label="Fresh head: only the labels in the dataset", value=False)
        promote_mode = gr.Radio(["auto", "always", "never"], value="auto", label="Promote the result")
    sources = gr.Textbox(
        label="Also learn from (optional): one per line, an imagefolder or Parquet path on the server, or a Hub dataset id",
        lines=2, value="", elem_id="train-datasets",
    )
    with gr.Row():
        start = gr.Button("Train a new version", variant="primary", elem_id="train-start")
        cancel = gr.Button("Cancel the run", elem_id="train-cancel")
    status = gr.Markdown(elem_id="train-status")
    table = gr.Dataframe(label="Production and candidate", interactive=False, elem_id="train-comparison")
    with gr.Row():
        target = gr.Textbox(label="Version to promote", value="candidate", elem_id="train-version")
        promote = gr.Button("Promote", elem_id="train-promote")
        rollback = gr.Button("Roll back production", elem_id="train-rollback")

    def train(secret: str | None, fresh: bool, mode: str, sources: str | None, token: gr.OAuthToken | None):
        require_maintainer(service, secret, token)
        arguments = ["--strategy", "head", "--promote", mode] + (["--new-head"] if fresh else [])
        for source in dataset_sources(sources):
            arguments += ["--dataset", source]
        try:
            return describe_job(jobs.start(arguments))
        except ClassifrError as err:
            raise gr.Error(str(err)) from err

    def cancel_run(secret: str | None, token: gr.OAuthToken | None):
        require_maintainer(service, secret, token)
        try:
            return describe_job(jobs.cancel())
        except ClassifrError as err:
            raise gr.Error(str(err)) from err

    def changed(action, *args):
        try:
            info = action(*args)
        except ClassifrError as err:
            raise gr.Error(str(err)) from err
        return f"Production is now **{info.version}**; new requests use it.", comparison_table(service)

    def promote_version(secret: str | None, ref: str, token: gr.OAuthToken | None):
        require_maintainer(service, secret, token)
        return changed(service.promote, ref)

    def roll_back(secret: str | None, token: gr.OAuthToken | None):
        require_maintainer(service, secret, token)
        return changed(service.rollback)

    def watch():
        state = jobs.state()
        if state.status == "succeeded":
            service.refresh()  # an auto-promoted version serves at once
        return describe_job(state), comparison_table(service)

    maintainer = dict(concurrency_limit=1, concurrency_id="maintainer")
    start.click(train, inputs=[password, new_head, promote_mode, sources], outputs=status, api_name="train", **maintainer)
    cancel.click(cancel_run, inputs=password, outputs=status, api_name="cancel_training", **maintainer)
    promote.click(promote_version, inputs=[password, target], outputs=[status, table], api_name="promote", **maintainer)
    rollback.click(roll_back, inputs=password, outputs=[status, table], api_name="rollback", **maintainer)
    refresh = gr.Button("Refresh", size="sm", elem_id="train-refresh")
    # Everyone may watch: the Refresh button is the public `training_status` API (a Timer's tick
    # event does not answer gradio_client calls), and the timer refreshes the page every 2 s.
    refresh.click(watch, outputs=[status, table], api_name="training_status")
    gr.Timer(2.0).tick(watch, outputs=[status, table], api_visibility="undocumented", show_progress="hidden")
    demo.load(watch, outputs=[status, table], api_visibility="undocumented")
