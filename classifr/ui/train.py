"""The Train tab, for maintainers: train a candidate in the background, compare it, promote or roll back.

Maintainer actions (APIs `train`, `cancel_training`, `promote`, `rollback`) need the password in
CLASSIFR_ADMIN_PASSWORD; without it they are switched off. Everyone may watch the progress: the
page polls it only while a run goes on, and the Refresh button (API `training_status`) asks now.
A promotion by another process reaches the app through the service's production follower.
"""

from __future__ import annotations

import logging

import gradio as gr

from classifr.app.jobs import JobState
from classifr.app.service import ClassifrService
from classifr.core.text import escape_markdown
from classifr.ui.errors import shows_errors
from classifr.ui.requests import client_of

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often the page reads the progress of a running training job

METRIC_ROWS = [
    ("accuracy", ("metrics", "accuracy")),
    ("macro F1", ("metrics", "macro_f1")),
    ("accuracy on labels the parent knows", ("comparison", "shared_accuracy_new")),
    ("churn against its parent", ("comparison", "churn")),
    ("eval images", ("metrics", "num_images")),
]


def require_maintainer(
    service: ClassifrService, password: str | None, oauth_token: gr.OAuthToken | None = None, request: gr.Request | None = None
) -> None:
    """The password, or HF sign-in as a member of CLASSIFR_MAINTAINER_ORG; NotAMaintainerError otherwise
    (a ClassifrError: the handler's @shows_errors turns it into a gr.Error). Wrong passwords are
    limited per client address, read from `request`."""
    client = client_of(request)
    how = service.require_maintainer(password, oauth_token.token if oauth_token else None, client=client)
    logger.info("maintainer action from %s allowed by %s", client or "an unknown address", how)


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


def comparison_table(service: ClassifrService, left: str = "production", right: str = "candidate") -> dict:
    """The eval metrics of two versions (or aliases) side by side."""
    if not service.has_registry:
        return {"headers": ["metric", left, right], "data": []}
    (a, p), (b, c) = service.version_metrics(left), service.version_metrics(right)
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

    @shows_errors
    def train(secret: str | None, fresh: bool, mode: str, sources: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        arguments = ["--strategy", "head", "--promote", mode] + (["--new-head"] if fresh else [])
        for source in dataset_sources(sources):
            arguments += ["--dataset", source]
        return describe_job(service.start_training(arguments))

    @shows_errors
    def cancel_run(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        return describe_job(service.cancel_training())

    def now_serving(version: str) -> tuple[str, dict]:
        return f"Production is now **{version}**; new requests use it.", comparison_table(service)

    @shows_errors
    def promote_version(secret: str | None, ref: str, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        return now_serving(service.promote(ref).version)

    @shows_errors
    def roll_back(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        return now_serving(service.rollback().version)

    def watch():
        return describe_job(service.training_status()), comparison_table(service)

    def poll_while_running():
        """The status for the page, and the poll timer switched off once the run has ended."""
        state = service.training_status()
        return describe_job(state), comparison_table(service), gr.Timer(active=state.status == "running")

    def poll_if_running():
        return gr.Timer(active=service.training_status().status == "running")

    # Ticks only while a run goes on: switched on when one starts (or is found running), off when it ends.
    poll = gr.Timer(POLL_SECONDS, active=False)
    hidden = dict(api_visibility="undocumented")
    maintainer = dict(concurrency_limit=1, concurrency_id="maintainer")
    start.click(train, inputs=[password, new_head, promote_mode, sources], outputs=status, api_name="train", **maintainer).success(
        lambda: gr.Timer(active=True), outputs=poll, **hidden
    )
    cancel.click(cancel_run, inputs=password, outputs=status, api_name="cancel_training", **maintainer)
    promote.click(promote_version, inputs=[password, target], outputs=[status, table], api_name="promote", **maintainer)
    rollback.click(roll_back, inputs=password, outputs=[status, table], api_name="rollback", **maintainer)
    refresh = gr.Button("Refresh", size="sm", elem_id="train-refresh")
    # Everyone may watch: the Refresh button is the public `training_status` API (a Timer's tick
    # event does not answer gradio_client calls).
    refresh.click(watch, outputs=[status, table], api_name="training_status").then(poll_if_running, outputs=poll, **hidden)
    poll.tick(poll_while_running, outputs=[status, table, poll], show_progress="hidden", **hidden)
    demo.load(poll_while_running, outputs=[status, table, poll], **hidden)
