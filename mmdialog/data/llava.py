"""LLaVA-Instruct JSON (conversations of `human` / `gpt` with an `<image>` marker) to our JSONL format.

    [{"id": "000000033471", "image": "000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                        {"from": "gpt", "value": "The bus is white and red."}, ...]}]
"""

from __future__ import annotations

import json
from pathlib import Path

from decoders.seq2seq import IMAGE_TOKEN
from mmdialog.data.format import write_dialogues
from mmdialog.errors import InputError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def convert_llava_record(record: dict, image_folder: str) -> dict:
    """One LLaVA conversation as one dialogue; the image goes with the turn that holds `<image>`."""
    image = record.get("image")
    turns, image_placed = [], False
    for message in record.get("conversations", []):
        role = ROLES.get(message.get("from", ""))
        if role is None:
            raise ValueError(f"unknown speaker {message.get('from')!r}")
        text = " ".join(str(message.get("value", "")).split())
        turn: dict = {"role": role, "text": text}
        if image and role == "user" and not image_placed and (IMAGE_TOKEN in text or not turns):
            turn["images"] = [f"{image_folder.rstrip('/')}/{image}" if image_folder else image]
            image_placed = True
        turns.append(turn)
    return {"id": str(record.get("id", "")), "turns": turns}


def convert_llava(source: Path, destination: Path, image_folder: str = "images") -> int:
    """Convert a LLaVA JSON (or JSONL) file; image paths become `image_folder/<image>`, relative to the
    destination's folder. Returns the number of dialogues written."""
    text = source.read_text(encoding="utf-8")
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise InputError(f"{source.name} is not LLaVA JSON: {exc.msg} at line {exc.lineno}") from None
    dialogues = []
    for index, record in enumerate(records):
        try:
            dialogues.append(convert_llava_record(record, image_folder))
        except ValueError as exc:
            raise InputError(f"{source.name}: conversation {index} ({record.get('id', '?')}): {exc}") from None
    write_dialogues(destination, dialogues)
    return len(dialogues)
