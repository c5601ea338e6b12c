"""Launching the app: the queue, limits, login, the operator's `/health` route, and `mmdialog serve`."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
from fastapi.routing import APIRoute

from app.state import AppState
from app.ui import ECHO_CANCELLATION_HEAD, KIOSK_CSS, PAGE_CSS, build_app
from mmdialog.errors import ConfigError


def start(blocks: gr.Blocks, host: str | None = None, port: int | None = None, quiet: bool = False) -> str:
    """Start serving `blocks` (made by `build_app`) in background threads; returns the local URL.
    Stop with `stop(blocks)`."""
    state: AppState = blocks.mmdialog_state
    settings = state.settings
    auth = _auth(settings.auth_user, settings.auth_password)
    # Turns beyond `concurrency` wait in the queue, and the page shows each waiting visitor its position.
    blocks.queue(default_concurrency_limit=settings.concurrency, max_size=settings.max_queue)
    # Outside Gradio's login on purpose: a monitor polls it, and it tells nothing about any conversation.
    # Given to FastAPI as it is made, so the route answers from the server's first request on.
    health = APIRoute("/health", state.health, methods=["GET"])
    _, url, _ = blocks.launch(
        server_name=host or settings.host, server_port=port or settings.port, share=settings.share, auth=auth,
        max_file_size=int(state.pipelines.default.config.limits.max_upload_mb * 1024 * 1024),
        prevent_thread_lock=True, ssr_mode=False, quiet=quiet, footer_links=[] if state.kiosk else ["api"],
        css=PAGE_CSS + (KIOSK_CSS if state.kiosk else ""), head=ECHO_CANCELLATION_HEAD, app_kwargs={"routes": [health]},
    )
    return url


def stop(blocks: gr.Blocks) -> None:
    """Close the server and delete the app's files."""
    blocks.close(verbose=False)
    blocks.mmdialog_state.files.close()


def serve(config: str | Path | None = None, overrides: Sequence[str] = (), kiosk: bool = False,
          host: str | None = None, port: int | None = None) -> None:
    """`mmdialog serve`: load the configured pipeline and serve it until interrupted."""
    from mmdialog.pipeline import DialoguePipeline
    from mmdialog.turn_log import configure_logging

    configure_logging()
    pipeline = DialoguePipeline.from_config(config, overrides)
    blocks = build_app(pipeline, pipeline.config.app, kiosk)
    url = start(blocks, host, port)
    print(f"mmdialog is serving {'a kiosk ' if kiosk else ''}on {url} (health: {url.rstrip('/')}/health)")
    # systemd stops a service with SIGTERM: treat it like Ctrl-C, so the uploads folder is still deleted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        blocks.block_thread()  # returns on Ctrl-C, having closed the server
    finally:
        stop(blocks)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _auth(user: str | None, password: str | None) -> tuple[str, str] | None:
    if bool(user) != bool(password):
        raise ConfigError("app.auth_user and app.auth_password go together: set both for a login, or neither")
    return (user, password) if user and password else None
