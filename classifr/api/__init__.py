"""Classifr's HTTP API under /v1, for programs: served beside the Gradio app on the same port,
without Gradio's queue (docs/api.md). It calls `ClassifrService`, like the UI and the CLI."""
