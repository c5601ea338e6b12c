"""`mmdialog feedback ...`: turn what people rated and corrected into training data."""

from __future__ import annotations

from typing import Annotated

import typer

feedback_app = typer.Typer(no_args_is_help=True, help="Turn rated and corrected replies into training data.")


@feedback_app.command("export")
def export(
    source: Annotated[str, typer.Option("--from", help="The feedback folder (feedback.jsonl + media/).")],
    out: Annotated[str, typer.Option("--out", help="Folder for supervised.jsonl, preferences.jsonl and media.")],
) -> None:
    """Write supervised.jsonl and preferences.jsonl (train.objective=dpo), with their media, from feedback.

    Supervised: corrections, and up-voted replies as given. Preferences: each correction (chosen) against
    the reply it corrects (rejected).
    """
    # mmdialog.cli imports this module to register it, so its error handling is imported when a command runs.
    from mmdialog.cli import reports_errors

    reports_errors(_export)(source, out)


def _export(source: str, out: str) -> None:
    from mmdialog.feedback.export import export_feedback

    summary = export_feedback(source, out)
    for problem in summary.problems:
        typer.echo(f"skipped {problem}", err=True)
    typer.echo(summary.line())
