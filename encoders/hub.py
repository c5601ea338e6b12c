"""Loading a model by hub name or local path, turning "not available here" into one clear sentence."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from mmdialog.errors import ModelNotAvailableError

T = TypeVar("T")

_OFFLINE_VALUES = {"1", "true", "yes", "on"}


def downloads_disabled() -> bool:
    """HF_HUB_OFFLINE=1 turns off every download mmdialog makes (Whisper and Coqui weights too): an operator
    who switches a machine offline means all of it."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _OFFLINE_VALUES


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether downloads are on and the server of `url` answers at all."""
    return not downloads_disabled() and _answers(url, timeout)


@functools.lru_cache(maxsize=8)
def _answers(url: str, timeout: float) -> bool:
    """Checked once per server, so an offline machine fails in milliseconds instead of sitting through a
    library's retries (or, with urllib, no timeout at all) for every file of every model."""
    endpoint = urlparse(url)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub (HF_ENDPOINT) answers at all."""
    return reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """No HTTP request at all while looking in the local cache (transformers still probes for adapter
    files otherwise, retrying for minutes on a machine without network)."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_or_explain(what: str, name: str, loader: Callable[..., T], **kwargs) -> T:
    """Call `loader(name, **kwargs)`, a `from_pretrained`; failing to find the files becomes one sentence.

    The local cache is tried first (no network at all); the hub only when the files are not there.
    """
    local = Path(name).expanduser()
    if local.is_absolute() or name.startswith((".", "~")):
        if not local.exists():
            raise ModelNotAvailableError([f"{what} '{name}' is not available: the folder does not exist."])
        name = str(local)
    try:
        with _hub_offline():
            return loader(name, local_files_only=True, **kwargs)
    except Exception as exc:  # hub, network and file errors come in many classes; all mean the same here
        if local.exists():
            problem = f"{what} '{name}' could not be loaded from its folder: {first_line(exc)}"
            raise ModelNotAvailableError([problem]) from None
    if hub_reachable():
        try:
            return loader(name, **kwargs)
        except Exception as exc:
            raise ModelNotAvailableError([f"{what} '{name}' could not be downloaded: {first_line(exc)}"]) from None
    raise ModelNotAvailableError([
        f"{what} '{name}' is not available offline: it is not in the local cache and the hub cannot be "
        f"reached (load it once with internet access to cache it, or give a local path)."
    ])
