"""The Monitor tab: live traffic per version from the prediction log, where the model fails, drift,
the eval metrics of every version, and the canary.

Everyone sees the numbers (counts, charts, tables). The photos (galleries and the review queue)
are shown to maintainers only, after the maintainer password (docs/privacy.md); changing the canary
share or promoting needs it too, as in the Train tab.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from classifr.app.access import NotAMaintainerError
from classifr.app.grants import MaintainerGrant
from classifr.app.service import ClassifrService
from classifr.core.errors import ClassifrError
from classifr.core.text import escape_markdown
from classifr.monitoring.report import WINDOWS, window_start
from classifr.ui.errors import shows_errors
from classifr.ui.feedback import username_of
from classifr.ui.privacy import monitor_note
from classifr.ui.requests import client_of
from classifr.ui.train import comparison_table, require_maintainer

logger = logging.getLogger(__name__)

ALL_VERSIONS = "all versions"
GALLERY_SIZE = 18
SUMMARY_HEADERS = [
    "version", "serving as", "predictions", "mean confidence", "low confidence", "with feedback", "corrected",
    "accuracy on feedback", "latency p50 (ms)", "latency p95 (ms)", "drift (PSI)",
]
VERSION_HEADERS = ["version", "parent", "aliases", "strategy", "labels", "labels added", "accuracy", "macro F1", "gate"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


# --- the numbers -----------------------------------------------------------------------------


def summary_rows(summary: dict[str, Any]) -> list[list]:
    roles = {version: role for role, version in summary["serving"].items()}
    rows = []
    for version, row in summary["by_version"].items():
        drift = row["drift"]
        psi = "n/a" if drift["value"] is None else f"{drift['value']:.3f}" + (" ALERT" if drift["alert"] else "")
        rows.append([
            version, roles.get(version, "—"), row["predictions"], round(row["mean_confidence"], 3),
            _pct(row["low_confidence_share"]), _pct(row["feedback_share"]), _pct(row["corrected_share"]),
            _pct(row["accuracy_on_feedback"]), round(row["latency_ms"]["p50"], 1), round(row["latency_ms"]["p95"], 1), psi,
        ])
    return rows


def alerts_markdown(summary: dict[str, Any]) -> str:
    """Drift alerts first (they are why a maintainer opens this tab), then one line per version."""
    if not summary["total"]:
        return "No predictions in this window yet. Classify some images, then refresh."
    lines = []
    for version, row in summary["by_version"].items():
        drift = row["drift"]
        text = escape_markdown(drift["message"])
        lines.append(f"- **⚠ Drift alert on {version}:** {text}" if drift["alert"] else f"- {version}: {text}")
    lost = summary["log"]["dropped"] + summary["log"]["failed"]
    if lost:
        lines.append(f"- **⚠ {lost} predictions could not be logged** (queue full or write errors; see the server log).")
    return "\n".join(lines)


def bucket_seconds(since: float | None, now: float) -> float:
    """About 60 points or fewer across the window: minutes for an hour, hours for days."""
    span = max(now - since, 60.0) if since is not None else 30 * 86400.0
    for bucket in (60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0):
        if span / bucket <= 60:
            return bucket
    return 86400.0


def volume_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["start", "version", "predictions"]).astype({"predictions": "int64"})
    frame["time"] = pd.to_datetime(frame["start"], unit="s", utc=True)
    return frame[["time", "version", "predictions"]]


def confidence_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["low", "high", "predictions"])
    frame["confidence"] = [f"{low:.1f}–{high:.1f}" for low, high in zip(frame["low"], frame["high"])]
    return frame[["confidence", "predictions"]]


def confusion_rows(summary: dict[str, Any]) -> list[list]:
    return [[row["predicted"], row["true"], row["count"]] for row in summary["corrections"]]


def version_rows(service: ClassifrService) -> list[list]:
    rows = []
    for info in reversed(service.list_versions()):
        meta = info.metadata
        gate = meta.get("gate_passed")
        rows.append([
            info.version, info.parent or "—", ", ".join(info.aliases), meta.get("strategy", "pretrained"), info.num_labels,
            ", ".join(meta.get("labels_added") or []), _pct(meta.get("accuracy")), _pct(meta.get("macro_f1")),
            "n/a" if gate is None else ("passed" if gate else "failed"),
        ])
    return rows


# --- images from the log ---------------------------------------------------------------------


def photo_grant(
    service: ClassifrService, secret: str | None, token: gr.OAuthToken | None, client: str | None
) -> tuple[MaintainerGrant | None, str]:
    """(grant, "") for a maintainer, else (None, the note shown instead of the photos).

    Without a password (or, with CLASSIFR_MAINTAINER_ORG, a Hub sign-in) nothing is checked, so a
    visitor's refresh never counts as a wrong password."""
    oauth_token = token.token if token is not None and service.settings.maintainer_org else None
    if not secret and not oauth_token:
        return None, monitor_note(service.settings)
    try:
        return service.maintainer_grant(secret, oauth_token, client=client), ""
    except NotAMaintainerError as err:
        return None, f"{monitor_note(service.settings)} **{escape_markdown(str(err))}**"


def logged_image(service: ClassifrService, prediction_id: str, grant: MaintainerGrant | None) -> Image.Image | None:
    data = service.logged_image(prediction_id, grant=grant)
    return Image.open(io.BytesIO(data)) if data else None


def gallery_items(
    service: ClassifrService, rows: list[dict], caption, grant: MaintainerGrant | None
) -> tuple[list, list[dict]]:
    """(gallery value, the rows shown) for rows that still have their image."""
    items, shown = [], []
    for row in rows:
        picture = logged_image(service, row["id"], grant) if row.get("has_image", True) else None
        if picture is not None:
            items.append((picture, caption(row)))
            shown.append(row)
    return items, shown


def bad_caption(row: dict) -> str:
    return f"{row['label']} ({row['score']:.0%}) → {row['true_label']} · {row['version']}"


def good_caption(row: dict) -> str:
    return f"{row['label']} ({row['score']:.0%}) · {row['version']}"


def review_caption(row: dict) -> str:
    return f"{row['label']}? ({row['score']:.0%}) · {row['version']}"


# --- the tab ---------------------------------------------------------------------------------


def build_monitor_tab(service: ClassifrService, demo: gr.Blocks) -> None:
    if not service.has_prediction_log:
        gr.Markdown("The prediction log is off (`CLASSIFR_PREDICTION_LOG=0`): there is nothing to monitor.")
        return
    with gr.Row():
        window = gr.Dropdown(list(WINDOWS), value="24h", label="Time window", elem_id="monitor-window")
        version = gr.Dropdown([ALL_VERSIONS], value=ALL_VERSIONS, label="Version", elem_id="monitor-version")
        refresh = gr.Button("Refresh", elem_id="monitor-refresh")
    alerts = gr.Markdown(elem_id="monitor-alerts")
    table = gr.Dataframe(headers=SUMMARY_HEADERS, label="Per version", interactive=False, elem_id="monitor-summary")
    with gr.Row():
        volume = gr.LinePlot(x="time", y="predictions", color="version", title="Predictions over time", y_lim=[0, None])
        confidence = gr.BarPlot(x="confidence", y="predictions", title="Top-1 confidence", y_lim=[0, None])
    labels = gr.BarPlot(x="label", y="predictions", title="Predicted labels (top 20)", sort="-y", y_lim=[0, None])
    summary_json = gr.JSON(visible=False)

    # Photos are for maintainers only (docs/privacy.md): hidden until a refresh with the password.
    photos_note = gr.Markdown(monitor_note(service.settings), elem_id="monitor-photos-note")
    grant = gr.State(None)  # kept on the server per session: a client cannot send one
    with gr.Column(visible=False, elem_id="monitor-photos") as photos:
        gr.Markdown("### Bad predictions: corrected by contributors\nClick one to see why the model decided.")
        bad = gr.Gallery(columns=6, height=260, allow_preview=False, elem_id="monitor-bad", label="Corrected")
        bad_rows = gr.State([])
        why = gr.Image(label="Why (Grad-CAM of the predicted label, by the serving version)", visible=False, height=320)
        why_caption = gr.Markdown()
        gr.Markdown("### Good predictions: confirmed by contributors")
        good = gr.Gallery(columns=6, height=260, allow_preview=False, elem_id="monitor-good", label="Confirmed")

        gr.Markdown(
            "### Review queue: the least confident predictions\n"
            "Pick one, then confirm or correct it: it goes into the project dataset like any correction."
        )
        review = gr.Gallery(columns=6, height=260, allow_preview=False, elem_id="monitor-review", label="To review")
        review_rows = gr.State([])
        picked = gr.State(None)
        with gr.Row():
            review_label = gr.Dropdown(service.label_choices(), value=None, label="The right label", filterable=True,
                                       allow_custom_value=True, elem_id="monitor-review-label")
            review_confirm = gr.Button("Confirm the prediction", elem_id="monitor-review-confirm")
            review_correct = gr.Button("Correct: store my label", elem_id="monitor-review-correct")
        review_status = gr.Markdown(elem_id="monitor-review-status")

    with gr.Row():
        confusion = gr.Dataframe(headers=["predicted", "true label", "corrections"], interactive=False,
                                 label="Confusions from corrections", elem_id="monitor-confusion")
        versions_table = gr.Dataframe(headers=VERSION_HEADERS, interactive=False, label="Eval metrics of every version",
                                      elem_id="monitor-versions")
    with gr.Row():
        left = gr.Dropdown(label="Compare", value="production", allow_custom_value=True)
        right = gr.Dropdown(label="with", value="candidate", allow_custom_value=True)
    side_by_side = gr.Dataframe(interactive=False, label="Side by side (eval split)", elem_id="monitor-compare")

    gr.Markdown("### Canary: serve a share of traffic with the candidate")
    canary_status = gr.Markdown(elem_id="monitor-canary")
    with gr.Row():
        password = gr.Textbox(label="Maintainer password", type="password", elem_id="monitor-password")
        share = gr.Slider(0, 50, value=service.canary_share * 100, step=5, label="Candidate share (%)")
        apply_share = gr.Button("Apply", elem_id="monitor-canary-apply")
        promote = gr.Button("Promote the candidate", variant="primary", elem_id="monitor-promote")

    def canary_text() -> str:
        candidate = service.candidate_version
        if candidate is None:
            return "The canary is off: production serves every prediction."
        return (f"**{candidate}** (candidate) serves {service.canary_share:.0%} of predictions, "
                f"**{service.serving_version}** (production) the rest. Compare them in the table above.")

    def photo_galleries(chosen: str | None, access: MaintainerGrant | None) -> tuple[list, list, list, list, list]:
        """(bad, bad rows, good, review, review rows): empty without a maintainer grant."""
        if access is None:
            return [], [], [], [], []
        bad_items, bad_shown = gallery_items(
            service, service.gallery("corrected", grant=access, version=chosen, limit=GALLERY_SIZE), bad_caption, access)
        good_items, _ = gallery_items(
            service, service.gallery("confirmed", grant=access, version=chosen, limit=GALLERY_SIZE), good_caption, access)
        review_items, review_shown = gallery_items(
            service, service.review_queue(grant=access, version=chosen, limit=GALLERY_SIZE), review_caption, access)
        return bad_items, bad_shown, good_items, review_items, review_shown

    def show(window_name: str, selected: str, secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        since = window_start(window_name)
        chosen = None if selected in (None, ALL_VERSIONS) else selected
        summary = service.monitor_summary(since=since)
        now = time.time()
        access, note = photo_grant(service, secret, token, client_of(request))
        bad_items, bad_shown, good_items, review_items, review_shown = photo_galleries(chosen, access)
        names = [ALL_VERSIONS, *summary["by_version"]]
        refs = [v.version for v in service.list_versions()]
        return (
            gr.update(choices=names, value=selected if selected in names else ALL_VERSIONS),
            alerts_markdown(summary),
            summary_rows(summary),
            volume_frame(service.prediction_volume(bucket_s=bucket_seconds(since, now), version=chosen, since=since)),
            confidence_frame(service.confidence_histogram(version=chosen, since=since)),
            pd.DataFrame(service.label_distribution(version=chosen, since=since, limit=20), columns=["label", "predictions"]),
            summary,
            bad_items, bad_shown, good_items, review_items, review_shown,
            confusion_rows(summary), version_rows(service),
            gr.update(choices=["production", "candidate", *refs]), gr.update(choices=["production", "candidate", *refs]),
            canary_text(),
            access, gr.update(visible=access is not None), note,
        )

    outputs = [version, alerts, table, volume, confidence, labels, summary_json, bad, bad_rows, good, review,
               review_rows, confusion, versions_table, left, right, canary_status, grant, photos, photos_note]

    def explain_bad(rows: list[dict], access: MaintainerGrant | None, event: gr.SelectData):
        row = rows[event.index]
        try:
            data = service.logged_image(row["id"], grant=access)
        except NotAMaintainerError as err:
            return gr.update(visible=False), escape_markdown(str(err))
        if data is None:
            return gr.update(visible=False), "This image is no longer kept (the log keeps the newest ones)."
        try:
            result = service.explain(data, method="gradcam", target=row["label"], name=f"prediction {row['id'][:8]}")
        except (ClassifrError, ValueError) as err:
            return gr.update(visible=False), f"Cannot explain it with {service.serving_version}: {escape_markdown(str(err))}"
        return (gr.update(value=result.picture, visible=True),
                f"{escape_markdown(row['version'])} said **{escape_markdown(row['label'])}** ({row['score']:.0%}); "
                f"the contributor said **{escape_markdown(row['true_label'])}**.")

    def pick(rows: list[dict], event: gr.SelectData):
        row = rows[event.index]
        return row, gr.update(value=row["label"])

    @shows_errors
    def store(row: dict | None, label: str | None, confirm: bool, grant: MaintainerGrant | None,
              request: gr.Request, profile: gr.OAuthProfile | None):
        if not row:
            raise gr.Error("Pick a prediction in the review queue first.")
        if not confirm and not label:
            raise gr.Error("Choose the right label first.")
        # Only the picked prediction's id is used: the photo and what the model said come from the log.
        prediction_id = row.get("id") if isinstance(row, dict) else row
        result = service.review_feedback(prediction_id, None if confirm else label, grant=grant,
                                         contributor=username_of(request, profile))
        if not result.ok:
            raise gr.Error(f"Not stored: {result.reason}")
        service.flush_prediction_log()
        return f"Stored as **{escape_markdown(result.label)}** ({result.status}).", None

    @shows_errors
    def set_share(secret: str | None, percent: float, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        service.set_canary_share(percent / 100)
        return canary_text()

    @shows_errors
    def promote_candidate(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        require_maintainer(service, secret, token, request)
        info = service.promote("candidate")
        return f"Production is now **{info.version}**; new requests use it. " + canary_text()

    hidden = dict(api_visibility="undocumented")
    shown_for = [window, version, password]  # the password shows the photos to a maintainer
    refresh.click(show, inputs=shown_for, outputs=outputs, api_name="monitor")
    window.change(show, inputs=shown_for, outputs=outputs, **hidden)
    version.input(show, inputs=shown_for, outputs=outputs, **hidden)
    demo.load(show, inputs=shown_for, outputs=outputs, **hidden)
    bad.select(explain_bad, inputs=[bad_rows, grant], outputs=[why, why_caption], concurrency_id="explain", **hidden)
    review.select(pick, inputs=review_rows, outputs=[picked, review_label], **hidden)
    teach = dict(concurrency_limit=2, concurrency_id="teach")
    def confirm_review(row: dict | None, label: str | None, grant: MaintainerGrant | None,
                       request: gr.Request, profile: gr.OAuthProfile | None):
        return store(row, label, True, grant, request, profile)

    def correct_review(row: dict | None, label: str | None, grant: MaintainerGrant | None,
                       request: gr.Request, profile: gr.OAuthProfile | None):
        return store(row, label, False, grant, request, profile)

    for button, action in ((review_confirm, confirm_review), (review_correct, correct_review)):
        button.click(action, inputs=[picked, review_label, grant], outputs=[review_status, picked], **teach, **hidden).then(
            show, inputs=shown_for, outputs=outputs, **hidden
        )
    for dropdown in (left, right):
        dropdown.change(lambda a, b: comparison_table(service, a, b), inputs=[left, right], outputs=side_by_side, **hidden)
    demo.load(lambda a, b: comparison_table(service, a, b), inputs=[left, right], outputs=side_by_side, **hidden)
    maintainer = dict(concurrency_limit=1, concurrency_id="maintainer")
    apply_share.click(set_share, inputs=[password, share], outputs=canary_status, api_name="set_canary", **maintainer)
    promote.click(promote_candidate, inputs=password, outputs=canary_status, api_name="promote_candidate", **maintainer)
    build_conflicts_panel(service, password)
    build_server_panel(service, demo)


# --- feedback conflicts (maintainers) ----------------------------------------------------------

CONFLICT_HEADERS = ["time (UTC)", "prediction", "version", "model said", "first answer (kept)", "later answer", "photo"]


def conflict_rows(conflicts: list[dict[str, Any]]) -> list[list]:
    return [
        [time.strftime("%Y-%m-%d %H:%M", time.gmtime(c["time"])), c["prediction_id"][:8], c["version"] or "—",
         c["predicted"] or "—", c["kept_label"], c["label"], c["image_sha256"][:12]]
        for c in conflicts
    ]


def build_conflicts_panel(service: ClassifrService, password: gr.Textbox) -> None:
    """Answers that contradict an earlier one for the same photo (docs/monitoring.md, "Feedback
    conflicts"), listed only after the maintainer password (the one of the canary row)."""
    gr.Markdown("### Feedback conflicts (maintainers)\nA later answer that differs from the first one "
                "given for the same photo. The first answer stays; review these before training.")
    show = gr.Button("Show conflicts", elem_id="monitor-conflicts-show")
    table = gr.Dataframe(headers=CONFLICT_HEADERS, interactive=False, label="Feedback conflicts",
                         elem_id="monitor-conflicts")

    @shows_errors
    def listed(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        grant = service.maintainer_grant(secret, token.token if token else None, client=client_of(request))
        return conflict_rows(service.feedback_conflicts(grant=grant))

    show.click(listed, inputs=password, outputs=table, api_name="feedback_conflicts",
               concurrency_limit=1, concurrency_id="maintainer")


# --- the server's own health ---------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _ms(latency: dict[str, Any]) -> str:
    if latency["p50"] is None:
        return "nothing measured yet"
    return f"{latency['p50']:.0f} / {latency['p95']:.0f} ms ({latency['count']} recent)"


def server_markdown(stats: dict[str, Any]) -> str:
    """The Server panel: CPU, memory, disk, the log's queue, and latency (docs/monitoring.md, "Process health")."""
    used = stats["memory_total_bytes"] - stats["memory_available_bytes"]
    return "\n".join([
        "| | now |", "|---|---|",
        f"| CPU | {stats['cpu_percent']:.0f}% of one core ({stats['cores']} cores) |",
        f"| memory of the app (RSS) | {_size(stats['rss_bytes'])} |",
        f"| memory of the machine | {_size(used)} used of {_size(stats['memory_total_bytes'])} |",
        f"| free disk (project home) | {_size(stats['disk_free_bytes'])} |",
        f"| prediction log queue | {stats['log_queue_depth']} waiting |",
        f"| latency p50 / p95 as callers see it (queue wait + work) | {_ms(stats['caller_ms'])} |",
        f"| latency p50 / p95 of the server's own work (decode + model) | {_ms(stats['server_ms'])} |",
    ])


def build_server_panel(service: ClassifrService, demo: gr.Blocks) -> None:
    gr.Markdown("### Server\nThis process's CPU and memory, the free disk of the project home, and latency "
                "(the same figures are in `/metrics`).")
    panel = gr.Markdown(elem_id="monitor-server")
    again = gr.Button("Refresh", size="sm", elem_id="monitor-server-refresh")

    def show_server() -> str:
        return server_markdown(service.process_stats())

    hidden = dict(api_visibility="undocumented")
    again.click(show_server, outputs=panel, **hidden)
    demo.load(show_server, outputs=panel, **hidden)
