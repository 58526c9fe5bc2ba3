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
GALLERY_COLUMNS = 4  # wide enough for a caption of label, confidence, version and time on one line
GALLERY_SIZE = 16  # photos per page of each gallery: four rows
TIME_FORMAT = "%Y-%m-%d %H:%M"  # 24-hour clock, UTC, everywhere in the tab
MIN_CHART_SPAN_S = 3600.0
SHORT_TIME_FORMAT = "%b %d %H:%M"  # in captions, where the year would push the rest out
# The shift of the confidence is the PSI of docs/monitoring.md ("Drift"): plain words on the page.
SHIFT_HEADER = "confidence shift"
SUMMARY_HEADERS = [
    "version", "serving as", "predictions", "mean confidence", "low confidence", "answered", "corrected",
    "right when answered", "time p50 (ms)", "time p95 (ms)", SHIFT_HEADER,
]
SUMMARY_WIDTHS = ["7%", "9%", "10%", "10%", "10%", "9%", "9%", "10%", "8%", "8%", "10%"]
VERSION_HEADERS = ["version", "parent", "aliases", "how trained", "labels", "labels added", "accuracy", "macro F1", "checks"]
VERSION_WIDTHS = ["9%", "9%", "14%", "12%", "8%", "18%", "10%", "10%", "10%"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


# --- the numbers -----------------------------------------------------------------------------


def summary_rows(summary: dict[str, Any]) -> list[list]:
    roles = {version: role for role, version in summary["serving"].items()}
    rows = []
    for version, row in summary["by_version"].items():
        drift = row["drift"]
        psi = "n/a" if drift["value"] is None else f"{drift['value']:.3f}" + (" ⚠ shifted" if drift["alert"] else "")
        rows.append([
            version, roles.get(version, "—"), row["predictions"], round(row["mean_confidence"], 3),
            _pct(row["low_confidence_share"]), _pct(row["feedback_share"]), _pct(row["corrected_share"]),
            _pct(row["accuracy_on_feedback"]), round(row["latency_ms"]["p50"], 1), round(row["latency_ms"]["p95"], 1), psi,
        ])
    return rows


def plain_drift(message: str) -> str:
    """The drift message in the page's words: the statistic's name stays in docs/monitoring.md."""
    return "confidence shift " + message[len("PSI "):] if message.startswith("PSI ") else message


def alerts_markdown(summary: dict[str, Any], newest: float | None = None, now: float | None = None) -> str:
    """Shift alerts first (they are why a maintainer opens this tab), then one line per version.
    `newest`: the time of the newest prediction in the whole log, to say how old it is when the
    window is empty."""
    if not summary["total"]:
        if newest is not None:
            age = _age((now if now is not None else time.time()) - newest)
            return f"No predictions in this time window: the newest is {age} old. Choose a longer window to count them."
        return "No predictions in this window yet. Classify some images, then refresh."
    lines = []
    for version, row in summary["by_version"].items():
        drift = row["drift"]
        text = escape_markdown(plain_drift(drift["message"]))
        lines.append(f"- **⚠ The confidence of {version} has shifted:** {text}" if drift["alert"] else f"- {version}: {text}")
    lost = summary["log"]["dropped"] + summary["log"]["failed"]
    if lost:
        lines.append(f"- **⚠ {lost} predictions could not be logged** (queue full or write errors; see the server log).")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} seconds"


def chart_span(in_window: tuple[float, float] | None, in_log: tuple[float, float] | None) -> tuple[tuple[float, float] | None, bool]:
    """The time span the chart shows, picked from the data: the window's predictions, or the
    whole log's when the window holds none (so old traffic never leaves an empty chart); and
    whether it fell back to the whole log."""
    if in_window is not None:
        return in_window, False
    return in_log, in_log is not None


def bucket_seconds(since: float | None, now: float) -> float:
    """About 60 points or fewer across the window: minutes for an hour, hours for days."""
    span = max(now - since, 60.0) if since is not None else 30 * 86400.0
    for bucket in (60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0):
        if span / bucket <= 60:
            return bucket
    return 86400.0


def volume_chart(service: ClassifrService, since: float | None, version: str | None) -> tuple[pd.DataFrame, str]:
    """(the "Predictions over time" frame, its caption), over the span the data covers."""
    span, fell_back = chart_span(service.prediction_time_span(since=since, version=version),
                                 service.prediction_time_span(version=version) if since is not None else None)
    if span is None:
        return volume_frame([]), "No predictions yet."
    first, last = span
    caption = f"{time.strftime(TIME_FORMAT, time.gmtime(first))} to {time.strftime(TIME_FORMAT, time.gmtime(last))} UTC"
    if fell_back:
        caption = f"None in the chosen window: all predictions, {caption}"
    # At least an hour, ending at the last prediction: a burst of a few seconds is a spike, not one lone point.
    first = min(first, last - MIN_CHART_SPAN_S)
    bucket = bucket_seconds(first, last)
    rows = service.prediction_volume(bucket_s=bucket, version=version, since=first)
    return volume_frame(with_empty_buckets(rows, first, last, bucket)), caption


def with_empty_buckets(rows: list[dict], first: float, last: float, bucket: float) -> list[dict]:
    """`rows` with a 0 for every bucket of [first, last] a version had no prediction in: the
    query returns only buckets with predictions, and a line drawn between them hides the gaps."""
    counts = {(row["start"], row["version"]): row["predictions"] for row in rows}
    versions = sorted({row["version"] for row in rows})
    starts = [bucket * k for k in range(int(first // bucket), int(last // bucket) + 1)]
    return [{"start": start, "version": v, "predictions": counts.get((start, v), 0)} for start in starts for v in versions]


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


def _when(row: dict) -> str:
    return time.strftime(SHORT_TIME_FORMAT, time.gmtime(row["time"]))


def bad_caption(row: dict) -> str:
    return f"{row['label']} ({row['score']:.0%}) → {row['true_label']} · {row['version']} · {_when(row)}"


def good_caption(row: dict) -> str:
    return f"{row['label']} ({row['score']:.0%}) · {row['version']} · {_when(row)}"


def review_caption(row: dict) -> str:
    return f"{row['label']}? ({row['score']:.0%}) · {row['version']} · {_when(row)}"


def page_text(page: int, counts: tuple[int, ...]) -> str:
    """The pager's line: which page, and whether any gallery has more."""
    more = any(n >= GALLERY_SIZE for n in counts)
    return f"Page {page + 1}" + (" (more on the next page)" if more else " (the last page)")


def review_answer(service: ClassifrService, picked: str | None, typed: str | None) -> tuple[str, str | None]:
    """What a Correct in the review queue means: ("store", label) for a known label, ("ask", the
    question) when the typed label would create a new category (docs/monitoring.md,
    "Galleries and the review queue"). A typed label is never matched to a longer one ("hat" is not "cowboy hat")."""
    if typed and typed.strip():
        check = service.check_new_label(typed)
        if check["existing"] is not None:
            return "store", check["existing"]
        near = check["near"]
        warning = f" Similar categories exist: {', '.join(repr(n) for n in near)}." if near else ""
        return "ask", f"Create the new category **{escape_markdown(check['label'])}**?{escape_markdown(warning)}"
    if not picked:
        raise gr.Error("Choose the right label, or type a new one.")
    return "store", picked


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
    # Widths for the words of each header, so no header breaks inside a word and nothing is cut off.
    table = gr.Dataframe(headers=SUMMARY_HEADERS, label="Per version", interactive=False, wrap=True,
                         column_widths=SUMMARY_WIDTHS, elem_id="monitor-summary")
    gr.Markdown(f"*{SHIFT_HEADER}*: how far the confidence of recent predictions moved from that of the "
                "version's test photos; 0.2 or more is a shift worth a look.", elem_id="monitor-shift-note")
    with gr.Row():
        volume = gr.LinePlot(x="time", y="predictions", color="version", title="Predictions over time", y_lim=[0, None],
                             x_axis_format="%d %b %H:%M", x_title="time (24-hour clock)", elem_id="monitor-volume")
        confidence = gr.BarPlot(x="confidence", y="predictions", title="Top-1 confidence", y_lim=[0, None])
    volume_note = gr.Markdown(elem_id="monitor-volume-note")
    labels = gr.BarPlot(x="label", y="predictions", title="Predicted labels (top 20)", sort="-y", y_lim=[0, None])
    summary_json = gr.JSON(visible=False)

    # Photos are for maintainers only (docs/privacy.md): hidden until a refresh with the password.
    photos_note = gr.Markdown(monitor_note(service.settings), elem_id="monitor-photos-note")
    grant = gr.State(None)  # kept on the server per session: a client cannot send one
    page = gr.State(0)  # the galleries' page, 0 first (worst first); not an API input
    with gr.Column(visible=False, elem_id="monitor-photos") as photos:
        with gr.Row():
            newer = gr.Button("◀ Previous page", size="sm", elem_id="monitor-page-previous")
            page_note = gr.Markdown("Page 1", elem_id="monitor-page")
            older = gr.Button("Next page ▶", size="sm", elem_id="monitor-page-next")
        gr.Markdown("### Bad predictions: corrected by contributors\n"
                    "Each photo once, the most confident mistakes first. Click one to see why the model decided.")
        bad = gr.Gallery(columns=GALLERY_COLUMNS, height=None, object_fit="contain", fit_columns=False, allow_preview=False, elem_id="monitor-bad",
                         label="Corrected")
        bad_rows = gr.State([])
        why = gr.Image(label="Why (the parts of the photo behind the predicted label, by the serving version)",
                       visible=False, height=320)
        why_caption = gr.Markdown()
        gr.Markdown("### Good predictions: confirmed by contributors\nEach photo once, the least confident first.")
        good = gr.Gallery(columns=GALLERY_COLUMNS, height=None, object_fit="contain", fit_columns=False, allow_preview=False, elem_id="monitor-good",
                          label="Confirmed")

        gr.Markdown(
            "### Review queue: the least confident predictions\n"
            "Each photo once (its newest prediction). Pick one, then confirm or correct it: it goes into the "
            "project dataset like any correction."
        )
        review = gr.Gallery(columns=GALLERY_COLUMNS, height=None, object_fit="contain", fit_columns=False, allow_preview=False,
                            elem_id="monitor-review", label="To review")
        review_rows = gr.State([])
        picked = gr.State(None)
        with gr.Row():
            # Known labels only: a filterable list that accepted typed text picked its first match on
            # Enter ("hat" became "cowboy hat"), so new labels are typed in their own box.
            review_label = gr.Dropdown(service.label_choices(), value=None, label="The right label", filterable=True,
                                       allow_custom_value=False, elem_id="monitor-review-label")
            review_new = gr.Textbox(label="…or a new category", placeholder="type it, then Correct",
                                    elem_id="monitor-review-new-label")
            review_confirm = gr.Button("Confirm the prediction", elem_id="monitor-review-confirm")
            review_correct = gr.Button("Correct: store my label", elem_id="monitor-review-correct")
        with gr.Row(visible=False, elem_id="monitor-review-create") as create_row:
            create_question = gr.Markdown(elem_id="monitor-review-create-question")
            create_yes = gr.Button("Create it and store", variant="primary", elem_id="monitor-review-create-yes")
            create_no = gr.Button("Cancel", elem_id="monitor-review-create-no")
        asked = gr.State(None)  # the new category the question is about: created only on "yes"
        review_status = gr.Markdown(elem_id="monitor-review-status")

    confusion = gr.Dataframe(headers=["predicted", "true label", "corrections"], interactive=False, wrap=True,
                             label="Confusions from corrections", elem_id="monitor-confusion")
    versions_table = gr.Dataframe(headers=VERSION_HEADERS, interactive=False, wrap=True, column_widths=VERSION_WIDTHS,
                                  label="Test results of every version", elem_id="monitor-versions")
    with gr.Row():
        left = gr.Dropdown(label="Compare", value="production", allow_custom_value=True)
        right = gr.Dropdown(label="with", value="candidate", allow_custom_value=True)
    side_by_side = gr.Dataframe(interactive=False, wrap=True, label="Side by side (held-out test photos)",
                                elem_id="monitor-compare")

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

    def photo_galleries(
        chosen: str | None, access: MaintainerGrant | None, at: int
    ) -> tuple[list, list, list, list, list, tuple[int, ...]]:
        """(bad, bad rows, good, review, review rows, rows per gallery) of page `at`: empty without
        a maintainer grant."""
        if access is None:
            return [], [], [], [], [], ()
        offset = at * GALLERY_SIZE
        bad_found = service.gallery("corrected", grant=access, version=chosen, limit=GALLERY_SIZE, offset=offset)
        good_found = service.gallery("confirmed", grant=access, version=chosen, limit=GALLERY_SIZE, offset=offset)
        review_found = service.review_queue(grant=access, version=chosen, limit=GALLERY_SIZE, offset=offset)
        bad_items, bad_shown = gallery_items(service, bad_found, bad_caption, access)
        good_items, _ = gallery_items(service, good_found, good_caption, access)
        review_items, review_shown = gallery_items(service, review_found, review_caption, access)
        counts = (len(bad_found), len(good_found), len(review_found))
        return bad_items, bad_shown, good_items, review_items, review_shown, counts

    def show(window_name: str, selected: str, secret: str | None, at: int | None, token: gr.OAuthToken | None,
             request: gr.Request):
        since = window_start(window_name)
        chosen = None if selected in (None, ALL_VERSIONS) else selected
        summary = service.monitor_summary(since=since)
        now = time.time()
        at = max(int(at or 0), 0)
        access, note = photo_grant(service, secret, token, client_of(request))
        bad_items, bad_shown, good_items, review_items, review_shown, counts = photo_galleries(chosen, access, at)
        names = [ALL_VERSIONS, *summary["by_version"]]
        refs = [v.version for v in service.list_versions()]
        newest = None if summary["total"] else (service.prediction_time_span() or (None, None))[1]
        frame, chart_note = volume_chart(service, since, chosen)
        return (
            gr.update(choices=names, value=selected if selected in names else ALL_VERSIONS),
            alerts_markdown(summary, newest, now),
            summary_rows(summary),
            frame, chart_note,
            confidence_frame(service.confidence_histogram(version=chosen, since=since)),
            pd.DataFrame(service.label_distribution(version=chosen, since=since, limit=20), columns=["label", "predictions"]),
            summary,
            bad_items, bad_shown, good_items, review_items, review_shown, page_text(at, counts),
            gr.update(choices=service.label_choices()),
            confusion_rows(summary), version_rows(service),
            gr.update(choices=["production", "candidate", *refs]), gr.update(choices=["production", "candidate", *refs]),
            canary_text(),
            access, gr.update(visible=access is not None), note,
        )

    outputs = [version, alerts, table, volume, volume_note, confidence, labels, summary_json, bad, bad_rows, good,
               review, review_rows, page_note, review_label, confusion, versions_table, left, right, canary_status,
               grant, photos, photos_note]

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
        # The choices are read again: categories created since the page loaded are there.
        choices = service.label_choices()
        return row, gr.update(choices=choices, value=row["label"] if row["label"] in choices else None), ""

    def store(row: dict | None, label: str | None, grant: MaintainerGrant | None, contributor: str | None) -> str:
        """Store the answer (None: confirm) to the picked prediction; the status line."""
        if not row:
            raise gr.Error("Pick a prediction in the review queue first.")
        # Only the picked prediction's id is used: the photo and what the model said come from the log.
        prediction_id = row.get("id") if isinstance(row, dict) else row
        result = service.review_feedback(prediction_id, label, grant=grant, contributor=contributor)
        if not result.ok:
            raise gr.Error(f"Not stored: {result.reason}")
        service.flush_prediction_log()
        return f"Stored as **{escape_markdown(result.label)}** ({result.status})."

    hide_question = (gr.update(visible=False), "")

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
    shown_for = [window, version, password, page]  # the password shows the photos to a maintainer
    refresh.click(show, inputs=shown_for, outputs=outputs, api_name="monitor")
    window.change(show, inputs=shown_for, outputs=outputs, **hidden)
    version.input(show, inputs=shown_for, outputs=outputs, **hidden)
    demo.load(show, inputs=shown_for, outputs=outputs, **hidden)
    bad.select(explain_bad, inputs=[bad_rows, grant], outputs=[why, why_caption], concurrency_id="explain", **hidden)
    review.select(pick, inputs=review_rows, outputs=[picked, review_label, review_new], **hidden)
    teach = dict(concurrency_limit=2, concurrency_id="teach")

    @shows_errors
    def confirm_review(row: dict | None, grant: MaintainerGrant | None, request: gr.Request,
                       profile: gr.OAuthProfile | None):
        return store(row, None, grant, username_of(request, profile)), None, *hide_question, None

    @shows_errors
    def correct_review(row: dict | None, label: str | None, typed: str | None, grant: MaintainerGrant | None,
                       request: gr.Request, profile: gr.OAuthProfile | None):
        if not row:
            raise gr.Error("Pick a prediction in the review queue first.")
        action, value = review_answer(service, label, typed)
        if action == "ask":  # nothing is stored until the maintainer says yes
            return "", row, gr.update(visible=True), value, service.check_new_label(typed)["label"]
        return store(row, value, grant, username_of(request, profile)), None, *hide_question, None

    @shows_errors
    def create_and_store(row: dict | None, label: str | None, grant: MaintainerGrant | None, request: gr.Request,
                         profile: gr.OAuthProfile | None):
        if not label:
            raise gr.Error("Type the new category, then Correct.")
        return store(row, label, grant, username_of(request, profile)), None, *hide_question, None

    answered = [review_status, picked, create_row, create_question, asked]
    review_confirm.click(confirm_review, inputs=[picked, grant], outputs=answered, **teach, **hidden).then(
        show, inputs=shown_for, outputs=outputs, **hidden)
    review_correct.click(correct_review, inputs=[picked, review_label, review_new, grant], outputs=answered,
                         **teach, **hidden).then(show, inputs=shown_for, outputs=outputs, **hidden)
    create_yes.click(create_and_store, inputs=[picked, asked, grant], outputs=answered, **teach, **hidden).then(
        show, inputs=shown_for, outputs=outputs, **hidden)
    create_no.click(lambda: (*hide_question, None), outputs=[create_row, create_question, asked], **hidden)
    for button, step in ((newer, -1), (older, 1)):
        button.click(lambda at, step=step: max(int(at or 0) + step, 0), inputs=page, outputs=page, **hidden).then(
            show, inputs=shown_for, outputs=outputs, **hidden)
    for dropdown in (left, right):
        dropdown.change(lambda a, b: comparison_table(service, a, b), inputs=[left, right], outputs=side_by_side, **hidden)
    demo.load(lambda a, b: comparison_table(service, a, b), inputs=[left, right], outputs=side_by_side, **hidden)
    maintainer = dict(concurrency_limit=1, concurrency_id="maintainer")
    apply_share.click(set_share, inputs=[password, share], outputs=canary_status, api_name="set_canary", **maintainer)
    promote.click(promote_candidate, inputs=password, outputs=canary_status, api_name="promote_candidate", **maintainer)
    build_conflicts_panel(service, password)
    build_server_panel(service, demo)


# --- conflicting answers (maintainers) ---------------------------------------------------------

CONFLICT_HEADERS = ["time (UTC)", "prediction", "version", "model said", "first answer", "later answer", "photo", "open"]


def conflict_rows(conflicts: list[dict[str, Any]], open_photos: set[str] | frozenset[str] = frozenset()) -> list[list]:
    """The log's history of contradicting answers; `open`: the photo still waits for a settlement."""
    return [
        [time.strftime(TIME_FORMAT, time.gmtime(c["time"])), c["prediction_id"][:8], c["version"] or "—",
         c["predicted"] or "—", c["kept_label"], c["label"], c["image_sha256"][:12],
         "yes" if c["image_sha256"] in open_photos else "no"]
        for c in conflicts
    ]


def conflict_caption(conflict: dict[str, Any]) -> str:
    return f"{' or '.join(conflict['labels'])}?"


def conflict_answers(conflict: dict[str, Any]) -> str:
    """Who said what about a picked photo, one line per answer."""
    return "\n".join(
        f"- **{escape_markdown(a['label'])}**: {a['source']} by {escape_markdown(a['contributor'])}, "
        f"{escape_markdown(str(a['created_at']).replace('T', ' ')[:16])} UTC"
        for a in conflict["answers"]
    )


def build_conflicts_panel(service: ClassifrService, password: gr.Textbox) -> None:
    """Photos contributors gave different labels, for a maintainer to settle (docs/monitoring.md,
    "Feedback conflicts"); listed only after the maintainer password (the one of the canary row)."""
    gr.Markdown("### Conflicting answers (maintainers)\nPhotos that contributors gave different labels. Training "
                "leaves such a photo out until a maintainer picks its right label here.")
    show = gr.Button("Show conflicts", elem_id="monitor-conflicts-show")
    photos = gr.Gallery(columns=GALLERY_COLUMNS, height=None, object_fit="contain", fit_columns=False, allow_preview=False,
                        label="Photos with conflicting labels: pick one", elem_id="monitor-conflict-photos")
    listed_rows = gr.State([])
    chosen = gr.State(None)
    with gr.Row():
        right = gr.Radio([], label="Its right label", elem_id="monitor-conflict-label")
        settle = gr.Button("Settle: keep this label", variant="primary", elem_id="monitor-conflict-settle")
    status = gr.Markdown(elem_id="monitor-conflict-status")
    table = gr.Dataframe(headers=CONFLICT_HEADERS, interactive=False, wrap=True, label="Every contradicting answer",
                         elem_id="monitor-conflicts")

    def grant_of(secret: str | None, token: gr.OAuthToken | None, request: gr.Request) -> MaintainerGrant:
        return service.maintainer_grant(secret, token.token if token else None, client=client_of(request))

    def listing(grant: MaintainerGrant):
        open_conflicts = service.dataset_conflicts(grant=grant)
        items = []
        for conflict in open_conflicts:
            data = service.dataset_photo(conflict["sha256"], grant=grant)
            if data is not None:
                items.append((Image.open(io.BytesIO(data)), conflict_caption(conflict)))
        history = conflict_rows(service.feedback_conflicts(grant=grant) if service.has_prediction_log else [],
                                {c["sha256"] for c in open_conflicts})
        return history, items, open_conflicts, None, gr.update(choices=[], value=None)

    @shows_errors
    def listed(secret: str | None, token: gr.OAuthToken | None, request: gr.Request):
        return listing(grant_of(secret, token, request))

    def pick(rows: list[dict], event: gr.SelectData):
        conflict = rows[event.index]
        return conflict, gr.update(choices=conflict["labels"], value=None), conflict_answers(conflict)

    @shows_errors
    def settled(conflict: dict | None, label: str | None, secret: str | None, token: gr.OAuthToken | None,
                request: gr.Request, profile: gr.OAuthProfile | None):
        if not conflict:
            raise gr.Error("Pick a photo with conflicting labels first.")
        if not label:
            raise gr.Error("Choose its right label first.")
        grant = grant_of(secret, token, request)
        kept = service.settle_conflict(conflict["sha256"], label, grant=grant, contributor=username_of(request, profile))
        return (f"Settled: the photo is **{escape_markdown(kept)}** from now on, for training too.", *listing(grant))

    outputs = [table, photos, listed_rows, chosen, right]
    maintainer = dict(concurrency_limit=1, concurrency_id="maintainer")
    show.click(listed, inputs=password, outputs=outputs, api_name="feedback_conflicts", **maintainer)
    photos.select(pick, inputs=listed_rows, outputs=[chosen, right, status], api_visibility="undocumented")
    # The photo picked is session state, so this is not an API: a script settles through ClassifrService.
    settle.click(settled, inputs=[chosen, right, password], outputs=[status, *outputs], api_visibility="undocumented",
                 **maintainer)


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


SERVER_REFRESH_S = 10


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
    # A panel of live figures: it follows them (a cheap read of /proc and the metrics, no model work).
    gr.Timer(SERVER_REFRESH_S).tick(show_server, outputs=panel, queue=False, **hidden)
