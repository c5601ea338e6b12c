"""The Gradio front end and kiosk mode; calls the pipeline, holds no model logic."""

import os

# Gradio reports usage and checks for updates from background threads unless told not to; an assistant
# (often offline, in a kiosk) must not phone home. Set before anything here imports gradio.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.server import serve, start, stop  # noqa: E402
from app.ui import build_app  # noqa: E402

__all__ = ["build_app", "serve", "start", "stop"]
