"""The Gradio Blocks app. Only this package (and app.py) imports gradio."""
