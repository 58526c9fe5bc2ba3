"""A version's overview (classifr.versions.overview.ModelOverview) rendered as the Model tab's Markdown.

Every value that comes from users or files (labels, dataset names, notes) is escaped for Markdown
here, so the card shows text and never runs links or HTML.
"""

from __future__ import annotations

from typing import Any

from classifr.core.text import escape_markdown
from classifr.versions.overview import HISTORY_NUMBERS, ModelOverview, is_finite_number

MAX_LABEL_ROWS = 50  # label tables longer than this are cut; the JSON has every label
MAX_PER_CLASS_ROWS = 50
MAX_LABEL_SAMPLE = 30  # labels named inline when none has training images (v1's 1,000)
MAX_HISTORY_ROWS = 50
# The training history's column titles, in overview.HISTORY_NUMBERS' order (docs/retraining.md,
# "Resources watched while training").
HISTORY_TITLES = {
    "epoch": "epoch", "train_loss": "train loss", "eval_accuracy": "eval accuracy", "images_per_second": "images/s",
    "peak_memory_mb": "peak memory", "cpu_percent": "CPU %", "gpu_percent": "GPU %", "gpu_peak_memory_mb": "GPU memory",
}
HISTORY_COLUMNS = tuple((key, HISTORY_TITLES[key]) for key in HISTORY_NUMBERS)


def render_markdown(overview: ModelOverview) -> str:
    """A readable card: Architecture, Labels, Datasets, Training, Metrics, Lineage; tables stay short."""
    o = overview
    e = escape_markdown
    tags = [e(alias) for alias in o.aliases] + (["serving"] if o.serving else [])
    title = f"## Model {e(o.version)}" + (f" ({', '.join(tags)})" if tags else "")
    lines = [title, ""]
    if o.created_at:
        lines.append(f"Published {e(o.created_at)}." + (f" [Files on the Hub]({o.url})" if o.url else ""))
        lines.append("")
    lines += _architecture_section(o) + _labels_section(o) + _datasets_section(o)
    lines += _training_section(o) + _metrics_section(o) + _lineage_section(o)
    if o.notes:
        lines += ["", "> Could not read everything: " + "; ".join(e(note) for note in o.notes)]
    return "\n".join(lines).rstrip() + "\n"


def _architecture_section(o: ModelOverview) -> list[str]:
    e = escape_markdown
    rows = []
    if o.architecture:
        kind = " (timm, through Transformers' TimmWrapperForImageClassification)" if o.model_type == "timm_wrapper" else ""
        rows.append(("architecture", f"**{e(o.architecture)}**{kind}"))
    if o.parameters is not None:
        rows.append(("parameters", f"{o.parameters:,} ({o.parameters / 1e6:.2f} M)"))
    if o.preprocessing:
        rows.append(("input", _describe_preprocessing(o.preprocessing)))
    if o.source:
        rows.append(("source", e(o.source)))
    lines = ["### Architecture", ""]
    if not rows:
        return lines + ["Unknown (config.json could not be read).", ""]
    lines += ["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return lines + [""]


def _describe_preprocessing(p: dict[str, Any]) -> str:
    e = escape_markdown
    size = p.get("input_size")
    parts = []
    if size:
        parts.append(f"{size[1]}×{size[0]} px" if len(size) == 2 else e(size))
    if p.get("resize_shortest"):
        parts.append(f"{e(p.get('interpolation') or '')} resize of the shorter side to {p['resize_shortest']} px, center crop".strip())
    elif p.get("interpolation"):
        parts.append(f"{e(p['interpolation'])} resize")
    if p.get("mean"):
        parts.append(f"mean {e(_numbers(p['mean']))}, std {e(_numbers(p.get('std', [])))}")
    if p.get("processor"):
        parts.append(f"processor {e(p['processor'])}")
    return "; ".join(parts) or "unknown"


def _labels_section(o: ModelOverview) -> list[str]:
    e = escape_markdown
    lines = ["### Labels", ""]
    total = len(o.labels)
    counted = [row for row in o.labels if row.get("train_images")]
    without = [row for row in o.labels if not row.get("train_images")]
    unknown = all(row.get("train_images") is None for row in o.labels)
    if not o.labels:
        lines.append("No labels could be read.")
    elif unknown and total > MAX_LABEL_ROWS:
        sample = ", ".join(e(row["label"]) for row in o.labels[:MAX_LABEL_SAMPLE])
        why = ("published before Classifr recorded them" if o.training.get("strategy") or o.training.get("parent")
               else "not trained on the project dataset")
        lines.append(f"{total:,} labels; this version records no training image counts ({why}). "
                     f"The first {MAX_LABEL_SAMPLE}: {sample}, …")
        lines.append("")
        lines.append("The full list is in the JSON below.")
    elif total <= MAX_LABEL_ROWS:
        lines.append(f"{total} labels.")
        lines += ["", "| label | training images |", "|---|---:|"]
        lines += [f"| {e(row['label'])} | {_count(row.get('train_images'))} |" for row in o.labels]
    else:
        counted.sort(key=lambda row: (-row["train_images"], row["label"].casefold()))
        lines.append(f"{total:,} labels, {len(counted):,} of them with training images.")
        if counted:
            shown = counted[:MAX_LABEL_ROWS]
            lines += ["", "| label | training images |", "|---|---:|"]
            lines += [f"| {e(row['label'])} | {row['train_images']:,} |" for row in shown]
            if len(counted) > len(shown):
                lines += ["", f"… and {len(counted) - len(shown):,} more labels with training images."]
        parent = o.training.get("parent")
        kept = f" (kept from {e(parent)})" if parent else ""
        lines += ["", f"And {len(without):,} labels without project training images{kept}; the full list is in the JSON below."]
    if o.pending_labels:
        one = len(o.pending_labels) == 1
        pending = ", ".join(
            f"**{e(row['label'])}** ({_count(row.get('images'))} {'image' if row.get('images') == 1 else 'images'})"
            for row in o.pending_labels[:MAX_LABEL_ROWS]
        )
        more = f", … and {len(o.pending_labels) - MAX_LABEL_ROWS} more" if len(o.pending_labels) > MAX_LABEL_ROWS else ""
        lines += ["", f"Pending: {len(o.pending_labels)} project {'category' if one else 'categories'} this version "
                      f"does not know yet (the next training run adds {'it' if one else 'them'}): {pending}{more}."]
    return lines + [""]


def _datasets_section(o: ModelOverview) -> list[str]:
    e = escape_markdown
    lines = ["### Datasets", ""]
    if not o.datasets:
        return lines + ["No training data recorded.", ""]
    lines += ["| dataset | role | images | by source | fingerprint |", "|---|---|---:|---|---|"]
    for row in o.datasets:
        name = f"[{e(row['name'])}]({row['card_url']})" if row.get("card_url") else e(row["name"])
        role = row.get("role") or ""
        if row.get("via"):
            role += f" (via {e(row['via'])})"
        by_source = ", ".join(f"{e(k)} {_count(v)}" for k, v in (row.get("by_source") or {}).items())
        lines.append(f"| {name} | {role} | {_count(row.get('images'))} | {by_source} | {e(row.get('fingerprint') or '')} |")
    return lines + [""]


def _training_section(o: ModelOverview) -> list[str]:
    e = escape_markdown
    t = o.training
    lines = ["### Training", ""]
    if not t.get("parent") and not t.get("strategy"):
        origin = f" It was built from {e(o.source)}." if o.source else ""
        return lines + [f"Not trained by Classifr: a pretrained model.{origin}", ""]
    lines.append(f"- Parent: {e(t['parent']) if t.get('parent') else 'none'}")
    lines.append(f"- Strategy: {e(t['strategy']) if t.get('strategy') else 'unknown'}")
    added = t.get("labels_added")
    if added is not None:
        lines.append(f"- Labels added: {', '.join(e(x) for x in added[:MAX_LABEL_ROWS]) or 'none'}"
                     + (f", … ({len(added)} in all)" if len(added) > MAX_LABEL_ROWS else ""))
    hyper = t.get("hyperparameters")
    if hyper:
        lines.append("- Hyperparameters: " + ", ".join(f"{e(k)}={e(v)}" for k, v in hyper.items()))
    elif hyper is None:
        lines.append("- Hyperparameters: not recorded")
    headers, rows = history_table(o.history[:MAX_HISTORY_ROWS])
    if rows:
        lines += ["", "| " + " | ".join(headers) + " |", "|" + "---:|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if len(o.history) > MAX_HISTORY_ROWS:
            lines += ["", f"… and {len(o.history) - MAX_HISTORY_ROWS} more epochs; every one is in the JSON below."]
    return lines + [""]


def history_table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of training history records: only the columns that have a value in some record.

    The first column is the epoch, or the record's `stage` (the head strategy's embedding pass).
    Cells are text; anything that is not a finite number shows as "—". Also the Train tab's table.
    """
    records = [r for r in records if isinstance(r, dict)]
    columns = [
        (key, title) for key, title in HISTORY_COLUMNS
        if any(is_finite_number(r.get(key)) or (key == "epoch" and isinstance(r.get("stage"), str)) for r in records)
    ]
    rows = [[_history_cell(key, record) for key, _ in columns] for record in records]
    return [title for _, title in columns], rows


def format_megabytes(value: Any) -> str:
    """850 MB, 1.9 GB; "—" when not a number."""
    if not is_finite_number(value):
        return "—"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def _history_cell(key: str, record: dict[str, Any]) -> str:
    value = record.get(key)
    if key == "epoch" and not is_finite_number(value):
        return escape_markdown(record["stage"]) if isinstance(record.get("stage"), str) else "—"
    if not is_finite_number(value):
        return "—"
    if key == "epoch":
        return f"{value:g}"
    if key == "train_loss":
        return f"{value:.4f}"
    if key == "eval_accuracy":
        return _pct(value)
    if key.endswith("_mb"):
        return format_megabytes(value)
    return f"{value:.1f}" if key == "images_per_second" else f"{value:.0f}"


def _metrics_section(o: ModelOverview) -> list[str]:
    e = escape_markdown
    m = o.metrics
    lines = ["### Metrics", ""]
    if not m:
        return lines + ["No evaluation recorded for this version.", ""]
    comparison = m.get("comparison") or {}
    rows = [
        ("accuracy", _pct(m.get("accuracy"))),
        ("macro F1", _pct(m.get("macro_f1"))),
        ("eval images", _count(m.get("num_images"))),
        ("parent's accuracy", _pct(comparison.get("parent_accuracy"))),
        ("accuracy on labels the parent knows", _pct(comparison.get("shared_accuracy_new"))),
        ("churn against the parent (top-1 changed)", _pct(comparison.get("churn"))),
    ]
    rows = [row for row in rows if row[1] != "—"]
    if rows:
        lines += ["| metric | value |", "|---|---:|"] + [f"| {name} | {value} |" for name, value in rows]
    gate = m.get("gate")
    if isinstance(gate, dict) and "passed" in gate:
        reasons = "; ".join(e(r) for r in gate.get("reasons") or [])
        lines += ["", "Promotion gate: " + ("passed" if gate["passed"] else "failed" + (f": {reasons}" if reasons else ""))]
    per_class = m.get("per_class") or {}
    if per_class:
        shown = list(per_class.items())[:MAX_PER_CLASS_ROWS]
        lines += ["", "| label | precision | recall | F1 | eval images |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {e(label)} | {_pct(row.get('precision'))} | {_pct(row.get('recall'))} | {_pct(row.get('f1'))} | {_count(row.get('support'))} |"
            for label, row in shown
        ]
        if len(per_class) > len(shown):
            lines += ["", f"… and {len(per_class) - len(shown)} more labels; every row is in the JSON below."]
    return lines + [""]


def _lineage_section(o: ModelOverview) -> list[str]:
    e = escape_markdown
    lines = ["### Lineage", ""]
    if not o.lineage:
        return lines + ["Not known (served without a registry)."]
    lines.append(" ← ".join(f"**{e(step['version'])}**" for step in o.lineage))
    lines += ["", "| version | created | strategy | labels added | accuracy |", "|---|---|---|---|---:|"]
    for step in o.lineage:
        if step.get("missing"):
            lines.append(f"| {e(step['version'])} | missing from the registry | | | |")
            continue
        strategy = step.get("strategy") or ("pretrained" if step.get("source") else "")
        added = step.get("labels_added") or []
        shown = ", ".join(e(x) for x in added[:10]) + (f", … ({len(added)} in all)" if len(added) > 10 else "")
        lines.append(f"| {e(step['version'])} | {e(step.get('created_at') or '')} | {e(strategy)} | {shown} | {_pct(step.get('accuracy'))} |")
    return lines


# --------------------------------------------------------------------------- helpers


def _pct(value: Any) -> str:
    return f"{value:.1%}" if is_finite_number(value) else "—"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "—"


def _numbers(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")" if isinstance(values, (list, tuple)) else str(values)
