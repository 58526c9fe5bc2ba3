"""The Train tab, for maintainers: train a candidate in the background, compare it, promote or roll back.

Maintainer actions (APIs `train`, `cancel_training`, `promote`, `rollback`) need the password in
CLASSIFR_ADMIN_PASSWORD; without it they are switched off. Everyone may watch the progress: the
page polls it only while a run goes on, and the Refresh button (API `training_status`) asks now.
A promotion by another process reaches the app through the service's production follower.

The run's live status and the outcome of the maintainer's last action are two separate lines: the
poll rewrites the first only, so "Production is now v2" stays until the maintainer acts again, and
an error stays on screen until closed (docs/features.md, "Train tab").

While a run goes on, its epochs (loss, accuracy and the resources watched while training,
docs/retraining.md) fill a table, and the status line ends with the latest one's summary.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import gradio as gr

from classifr.app.jobs import JobState
from classifr.app.service import ClassifrService
from classifr.core.text import escape_markdown
from classifr.ui.errors import shows_errors
from classifr.ui.requests import client_of
from classifr.versions.card_markdown import format_megabytes, history_table
from classifr.versions.overview import is_finite_number

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often the page reads the progress of a running training job

P = ParamSpec("P")
R = TypeVar("R")


def require_maintainer(
    service: ClassifrService, password: str | None, oauth_token: gr.OAuthToken | None = None, request: gr.Request | None = None
) -> None:
    """The password, or HF sign-in as a member of CLASSIFR_MAINTAINER_ORG; NotAMaintainerError otherwise
    (a ClassifrError: the handler's @shows_errors turns it into a gr.Error). Wrong passwords are
    limited per client address, read from `request`."""
    client = client_of(request)
    how = service.require_maintainer(password, oauth_token.token if oauth_token else None, client=client)
    logger.info("maintainer action from %s allowed by %s", client or "an unknown address", how)


def lasting(fn: Callable[P, R]) -> Callable[P, R]:
    """A maintainer action's error stays on screen until it is closed, not 10 seconds."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            err.duration = None
            raise

    return wrapper


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
        summary = epoch_summary(state.epochs)
        return f"**Training…** {escape_markdown(state.stage)} ({state.fraction:.0%})" + (f" · {summary}" if summary else "")
    if state.status == "succeeded" and state.outcome:
        o = state.outcome
        added = ", ".join(escape_markdown(x) for x in o["labels_added"]) or "none"
        verdict = "promoted to production" if o["promoted"] else "kept as candidate"
        gate = "" if o["gate"]["passed"] else " Not promoted automatically: " + "; ".join(
            escape_markdown(r) for r in o["gate"]["reasons"]
        )
        accuracy = _on(o["metrics"].get("accuracy"), o["metrics"].get("num_images"))
        return (f"**{o['version']}** trained from {o['parent']}: accuracy {accuracy} held out, "
                f"new labels: {added}; {verdict}.{gate}")
    if state.status == "cancelled":
        return "Training was cancelled."
    return f"**Training failed:** {escape_markdown(state.error or 'unknown error')}"


def epoch_summary(epochs: list[dict[str, Any]]) -> str:
    """The latest epoch in one line: "epoch 3 · 24 images/s · 1.9 GB · CPU 96%" (parts without a value left out)."""
    if not epochs or not isinstance(epochs[-1], dict):
        return ""
    last = epochs[-1]
    parts = []
    if is_finite_number(last.get("epoch")):
        parts.append(f"epoch {last['epoch']:g}")
    if is_finite_number(last.get("images_per_second")):
        parts.append(f"{last['images_per_second']:.0f} images/s")
    if is_finite_number(last.get("peak_memory_mb")):
        parts.append(format_megabytes(last["peak_memory_mb"]))
    if is_finite_number(last.get("cpu_percent")):
        parts.append(f"CPU {last['cpu_percent']:.0f}%")
    if is_finite_number(last.get("gpu_percent")):
        parts.append(f"GPU {last['gpu_percent']:.0f}%")
    return " · ".join(parts)


def epoch_table(epochs: list[dict[str, Any]]) -> dict:
    """The current (or last) run's epochs for a Dataframe: only the columns that have values."""
    headers, rows = history_table(epochs)
    return {"headers": headers or ["epoch"], "data": rows}


def _epochs_view(state: JobState) -> dict:
    return gr.update(value=epoch_table(state.epochs), visible=bool(state.epochs))


# --- the comparison: which versions, and their measurements ------------------------------------


def compared_versions(service: ClassifrService) -> list[tuple[str, str, dict[str, Any]]]:
    """(role, version, metrics.json) of the versions compared, older first: production and the
    candidate while they differ; once the candidate is production (after a promote), the previous
    production and production; production alone when there is nothing to compare it with."""
    production, current = service.version_metrics("production")
    candidate, trained = service.version_metrics("candidate")
    if candidate not in ("—", production):
        return [("production", production, current), ("candidate", candidate, trained)]
    previous = service.previous_production()
    if previous is not None and previous != production:
        return [("previous production", previous, service.version_metrics(previous)[1]), ("production", production, current)]
    return [("production", production, current)]


def comparison_table(service: ClassifrService, left: str | None = None, right: str | None = None) -> dict:
    """The held-out measurements of two versions (or aliases) side by side, by default those of
    `compared_versions`; every figure says on how many held-out photos it was measured
    (docs/retraining.md, "Metrics a version records")."""
    if not service.has_registry:
        return {"headers": ["measure", left or "production"], "data": []}
    if left is None or right is None:
        columns = compared_versions(service)
    else:
        columns = [(ref, *service.version_metrics(ref)) for ref in (left, right)]
    measures = [m for _, _, m in columns]
    rows = [[name, *(read(m) for m in measures)] for name, read in MEASURES]
    for label in _labels(measures):
        rows.append([f"{label}: F1", *(_label_f1(m, label) for m in measures)])
    titles = [version if role == version else f"{role} ({version})" for role, version, _ in columns]
    return {"headers": ["measure", *titles], "data": rows}


def _photos(count: Any) -> str:
    return "1 photo" if count == 1 else f"{count} photos"


def _on(value: Any, count: Any) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.1%}" if count is None else f"{value:.1%} on {_photos(count)}"


def _get(metrics: dict[str, Any], *path: str) -> Any:
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def _old_label_accuracy(m: dict[str, Any]) -> str:
    if _get(m, "comparison", "old_labels", "accuracy_restricted") is not None:
        return _on(_get(m, "comparison", "old_labels", "accuracy_restricted"), _get(m, "comparison", "old_labels", "num_images"))
    return _on(_get(m, "comparison", "shared_accuracy_new"), _get(m, "comparison", "num_shared"))


def _forgetting(m: dict[str, Any]) -> str:
    old = _get(m, "comparison", "old_labels") or {}
    if not isinstance(old.get("forgotten"), int) or not isinstance(old.get("parent_right"), int):
        return "n/a"
    share = f" ({old['forgetting']:.1%})" if isinstance(old.get("forgetting"), (int, float)) else ""
    return f"{old['forgotten']} of {old['parent_right']}{share}"


def _changed(m: dict[str, Any]) -> str:
    return _on(_get(m, "comparison", "churn"), _get(m, "comparison", "num_images"))


def _gate(m: dict[str, Any]) -> str:
    passed = _get(m, "gate", "passed")
    return "n/a" if passed is None else ("passed" if passed else "not passed")


MEASURES: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("accuracy on held-out photos", lambda m: _on(_get(m, "metrics", "accuracy"), _get(m, "metrics", "num_images"))),
    ("F1, averaged over labels", lambda m: _on(_get(m, "metrics", "macro_f1"), _get(m, "metrics", "num_images"))),
    ("accuracy among its parent's labels", _old_label_accuracy),
    ("forgotten: photos its parent got right, now wrong", _forgetting),
    ("answers changed from its parent", _changed),
    ("promotion check", _gate),
]


def _labels(measures: list[dict[str, Any]]) -> list[str]:
    labels: set[str] = set()
    for m in measures:
        labels |= set(_get(m, "metrics", "per_class") or {}) | set(_get(m, "held_out", "per_label") or {})
    return sorted(labels, key=str.casefold)


def _label_f1(m: dict[str, Any], label: str) -> str:
    row = _get(m, "metrics", "per_class", label) or {}
    count = row.get("support", _get(m, "held_out", "per_label", label))
    if row.get("f1") is None:
        return "n/a" if count is None else f"n/a ({_photos(count)})"
    return _on(row["f1"], count)


def comparison_notes(service: ClassifrService) -> str:
    """The newest compared version's promotion check in plain sentences, and the labels with too
    few held-out photos to be measured."""
    if not service.has_registry:
        return ""
    _, version, m = compared_versions(service)[-1]
    if not m:
        return f"{version} has no recorded measurements (it was not trained by Classifr)."
    gate = m.get("gate") or {}
    lines = [f"**Promotion check of {version}: {'passed' if gate.get('passed') else 'not passed'}.**"] if gate else []
    # The gate's summary already says each check in a sentence, the new labels' photo counts and the
    # mix-ups added included; versions trained before it had only reasons and warnings.
    summary = gate.get("summary") or []
    lines += [f"- {escape_markdown(str(s))}" for s in summary]
    if not summary:
        lines += [f"- {escape_markdown(str(s))}" for s in gate.get("reasons") or []]
        lines += [f"- ⚠️ {escape_markdown(str(w))}" for w in gate.get("warnings") or []]
    said = set(m.get("labels_added") or []) if summary else set()
    for item in _get(m, "held_out", "too_few") or []:
        if item.get("label") in said:
            continue
        lines.append(
            f"- **{escape_markdown(str(item.get('label')))}**: {item.get('held_out')} held-out photos, "
            f"add at least {item.get('add')} more to measure it."
        )
    for pair in [] if summary else _get(m, "comparison", "confusions_added") or []:
        lines.append(
            f"- {pair.get('count')} held-out photos of *{escape_markdown(str(pair.get('true')))}* answered "
            f"*{escape_markdown(str(pair.get('predicted')))}*."
        )
    return "\n".join(lines)


# --- the versions to promote and to roll back to -------------------------------------------------


def version_choices(service: ClassifrService, current: str | None = None) -> dict:
    """The registry's versions, newest first, with their aliases; the candidate chosen by default."""
    versions = list(reversed(service.list_versions()))  # the registry lists them oldest first
    choices = [(" · ".join([v.version, *v.aliases, f"{v.num_labels} labels"]), v.version) for v in versions]
    names = {v.version for v in versions}
    if current not in names:
        aliases = {alias: v.version for v in versions for alias in v.aliases}
        candidate = aliases.get("candidate")
        current = candidate if candidate != aliases.get("production") else None
    return gr.update(choices=choices, value=current)


def rollback_button(service: ClassifrService) -> dict:
    previous = service.previous_production()
    if previous is None:
        return gr.update(value="Roll back production (no earlier version)", interactive=False)
    return gr.update(value=f"Roll back production to {previous}", interactive=True)


def build_train_tab(service: ClassifrService, demo: gr.Blocks, tab: gr.Tab | None = None) -> None:
    """The tab's components and events; `tab`: the Train tab, whose selection refreshes the versions."""
    gr.Markdown(
        "Train a new version from production on the project dataset. By default only the model's last "
        "layer learns, on features of the photos computed once: seconds to minutes on a CPU. It is published "
        "as `candidate`; *auto* promotes it only when it forgets almost nothing its parent knew and "
        "recognises every new label. Full training of the whole network runs on a GPU: "
        "`accelerate launch -m training.train --strategy full`."
    )
    password = gr.Textbox(label="Maintainer password", type="password", elem_id="train-password")
    with gr.Row():
        new_head = gr.Checkbox(
            label="Start over: a model of only the labels in the dataset", value=False, elem_id="train-new-head",
            info="A new last layer (a logistic regression, --new-head) instead of extending production's.",
        )
        promote_mode = gr.Radio(
            ["auto", "always", "never"], value="auto", label="Promote the result", elem_id="train-promote-mode",
            info="auto: only when the promotion check passes.",
        )
    sources = gr.Textbox(
        label="Also learn from (optional): one per line, an imagefolder or Parquet path on the server, or a Hub dataset id",
        lines=2, value="", elem_id="train-datasets",
    )
    with gr.Row():
        start = gr.Button("Train a new version", variant="primary", elem_id="train-start")
        cancel = gr.Button("Cancel the run", elem_id="train-cancel")
    status = gr.Markdown(elem_id="train-status")
    epochs = gr.Dataframe(label="Epochs of this run", interactive=False, visible=False, elem_id="train-epochs")
    outcome = gr.Markdown(elem_id="train-outcome")
    table = gr.Dataframe(label="Compared on held-out photos", interactive=False, wrap=True, elem_id="train-comparison")
    notes = gr.Markdown(elem_id="train-notes")
    with gr.Row():
        # Chosen from the registry's list; a value typed in is checked by the registry (the API
        # takes a version name: its session never saw the choices added since start-up).
        target = gr.Dropdown(
            [], value=None, label="Version to promote", allow_custom_value=True, filterable=True, elem_id="train-version",
        )
        promote = gr.Button("Promote", elem_id="train-promote")
        rollback = gr.Button("Roll back production", elem_id="train-rollback")

    @lasting
    @shows_errors
    def train(secret: str | None, fresh: bool, mode: str, sources: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        arguments = ["--strategy", "head", "--promote", mode] + (["--new-head"] if fresh else [])
        for source in dataset_sources(sources):
            arguments += ["--dataset", source]
        return describe_job(service.start_training(arguments))

    @lasting
    @shows_errors
    def cancel_run(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        return describe_job(service.cancel_training())

    def now_serving(version: str) -> tuple[str, dict]:
        return f"Production is now **{version}**; new requests use it.", comparison_table(service)

    @lasting
    @shows_errors
    def promote_version(secret: str | None, ref: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        if not ref:
            raise gr.Error("Choose the version to promote.")
        return now_serving(service.promote(ref).version)

    @lasting
    @shows_errors
    def roll_back(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        return now_serving(service.rollback().version)

    def watch():
        return describe_job(service.training_status()), comparison_table(service)

    def versions_and_notes(current: str | None):
        return comparison_notes(service), version_choices(service, current), rollback_button(service)

    def poll_while_running(current: str | None):
        """The status for the page, and the poll timer switched off once the run has ended."""
        state = service.training_status()
        running = state.status == "running"
        lists = (gr.skip(), gr.skip(), gr.skip()) if running else versions_and_notes(current)
        return describe_job(state), comparison_table(service), *lists, _epochs_view(state), gr.Timer(active=running)

    def poll_if_running():
        return gr.Timer(active=service.training_status().status == "running")

    # Ticks only while a run goes on: switched on when one starts (or is found running), off when it ends.
    poll = gr.Timer(POLL_SECONDS, active=False)
    hidden = dict(api_visibility="undocumented")
    maintainer = dict(concurrency_limit=1, concurrency_id="maintainer")
    lists = dict(inputs=target, outputs=[notes, target, rollback], **hidden)
    start.click(train, inputs=[password, new_head, promote_mode, sources], outputs=status, api_name="train", **maintainer).success(
        lambda: ("", gr.Timer(active=True)), outputs=[outcome, poll], **hidden
    )
    cancel.click(cancel_run, inputs=password, outputs=status, api_name="cancel_training", **maintainer)
    promote.click(
        promote_version, inputs=[password, target], outputs=[outcome, table], api_name="promote", **maintainer
    ).then(versions_and_notes, **lists)
    rollback.click(roll_back, inputs=password, outputs=[outcome, table], api_name="rollback", **maintainer).then(
        versions_and_notes, **lists
    )
    refresh = gr.Button("Refresh", size="sm", elem_id="train-refresh")
    # Everyone may watch: the Refresh button is the public `training_status` API (a Timer's tick
    # event does not answer gradio_client calls).
    refresh.click(watch, outputs=[status, table], api_name="training_status").then(versions_and_notes, **lists).then(
        lambda: _epochs_view(service.training_status()), outputs=epochs, **hidden
    ).then(poll_if_running, outputs=poll, **hidden)
    polled = dict(inputs=target, outputs=[status, table, notes, target, rollback, epochs, poll], **hidden)
    poll.tick(poll_while_running, show_progress="hidden", **polled)
    demo.load(poll_while_running, **polled)
    if tab is not None:
        tab.select(poll_while_running, **polled)
