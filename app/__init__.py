"""The Gradio front end and kiosk mode; calls the pipeline, holds no model logic."""
