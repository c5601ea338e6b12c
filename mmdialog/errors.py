"""Errors a user can act on: each carries one sentence that says what is wrong and what to do."""

from __future__ import annotations


class MmdialogError(Exception):
    """Base class of every error the project reports to a person rather than as a traceback."""


class ConfigError(MmdialogError):
    """A preset, a YAML file or an override is wrong: unknown key, wrong type, missing file."""


class ModelNotAvailableError(MmdialogError):
    """One or more models cannot be loaded here (not cached and no network, or a wrong path)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InputError(MmdialogError):
    """An input (audio, image, text, data file) cannot be used; the message says why."""

    def apology(self) -> str:
        """What the person is told instead of an answer: one line."""
        return f"Sorry: {self}."


class CheckpointError(MmdialogError):
    """A saved model folder is missing a file, truncated or tampered with."""


class LicenceError(MmdialogError):
    """A model's terms forbid what was asked, e.g. bundling non-commercial weights without saying so."""
