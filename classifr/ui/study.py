"""The Model tab's benchmark section: the reports `classifr benchmark` wrote, table, plots and analysis.

Public and read-only: the API `benchmark_report` takes a report name ("" for the newest) and
returns its Markdown and plots.
"""

from __future__ import annotations

import logging

import gradio as gr
from PIL import Image

from classifr.app.service import ClassifrService
from classifr.ui.errors import shows_errors

logger = logging.getLogger(__name__)

NO_REPORT = ("No benchmark yet. A maintainer runs `classifr benchmark --quick` (about 10 minutes on a CPU) "
             "to compare backbones, strategies and classic baselines on the project data; the report shows here.")


def make_benchmark_report(service: ClassifrService):
    @shows_errors
    def benchmark_report(name: str | None) -> tuple[str, list[tuple[Image.Image, str]]]:
        names = service.study_reports()
        if not names:
            return NO_REPORT, []
        report = service.study_report(name or names[0])
        return report.markdown, [(_opened(path), caption) for path, caption in report.images]

    return benchmark_report


def _opened(path) -> Image.Image:
    # As PIL images: CLASSIFR_HOME may lie outside the paths Gradio is allowed to serve.
    with Image.open(path) as image:
        return image.convert("RGB")


def build_benchmark_section(service: ClassifrService, demo: gr.Blocks) -> None:
    with gr.Accordion("Benchmarks: backbones, strategies and baselines compared", open=False):
        with gr.Row():
            reports = gr.Dropdown(choices=service.study_reports(), label="Report", elem_id="benchmark-report-name", scale=3)
            refresh = gr.Button("Refresh", scale=1, elem_id="benchmark-refresh")
        text = gr.Markdown(NO_REPORT, elem_id="benchmark-report")
        plots = gr.Gallery(label="Plots", columns=3, height="auto", interactive=False, elem_id="benchmark-plots")
    benchmark_report = make_benchmark_report(service)

    def choices() -> dict:
        names = service.study_reports()
        return gr.update(choices=names, value=names[0] if names else None)

    refresh.click(choices, outputs=reports, api_visibility="undocumented").then(
        benchmark_report, inputs=reports, outputs=[text, plots], api_name="benchmark_report"
    )
    reports.input(benchmark_report, inputs=reports, outputs=[text, plots], api_visibility="undocumented")
    demo.load(choices, outputs=reports, api_visibility="undocumented").then(
        benchmark_report, inputs=reports, outputs=[text, plots], api_visibility="undocumented"
    )
