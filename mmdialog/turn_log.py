"""The operator's view of the service: one JSON line per turn.

Each line says which session, which turn, how it ended (answered, not heard, refused, failed) and the
error's class, what kind of input came (sizes only) and every stage's time. What people said, typed or
showed is not written unless `runtime.log_user_text` is on: logs travel to places conversations must not.
"""

from __future__ import annotations

import json
import logging
import sys
import time

TURN_LOGGER = "mmdialog.turns"
log = logging.getLogger(TURN_LOGGER)


def log_turn(session_id: str, turn: int, outcome: str, error_class: str | None, timings_ms: dict[str, float],
             inputs: dict[str, object], user_text: dict[str, str | None] | None = None) -> None:
    """Write one turn's line. `user_text` (the message and the reply) only when the operator asked for it."""
    if not log.isEnabledFor(logging.INFO):
        return
    record = {"ts": round(time.time(), 3), "event": "turn", "session": session_id, "turn": turn,
              "outcome": outcome, "error_class": error_class, "inputs": inputs, "timings_ms": timings_ms}
    if user_text is not None:
        record.update(user_text)
    log.info(json.dumps(record, ensure_ascii=False, separators=(",", ":")))


def configure_logging(level: int = logging.INFO) -> None:
    """For a server: warnings and errors as usual on stderr, and the turn lines as bare JSON on stdout."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not any(getattr(h, "mmdialog_turns", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.mmdialog_turns = True
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
