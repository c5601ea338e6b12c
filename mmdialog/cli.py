"""The `mmdialog` command line. Every command takes `--config` (a preset name or YAML path) and overrides."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from mmdialog.errors import MmdialogError
from mmdialog.feedback.cli import feedback_app

# Hub libraries and Gradio phone home from background threads; an assistant must not, unless asked.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="A multimodal dialogue system.")

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="Preset name (demo, tiny, base, ...) or YAML file.")
]
Overrides = Annotated[list[str] | None, typer.Argument(help="Config overrides as key.sub=value.")]

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _commands() -> None:
    """A multimodal dialogue system: speak, show a picture and type; it answers in text and voice."""


def reports_errors(command: F) -> F:
    """A user mistake or a missing model ends as one line on stderr and exit status 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MmdialogError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _count(module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@app.command()
@reports_errors
def info(config: ConfigOption = None, overrides: Overrides = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Load a configuration's model and show its components, sizes and what trains."""
    from mmdialog.config import config_to_dict, load_config
    from mmdialog.loading import load_model

    model = load_model(load_config(config, overrides or []), overrides or [])
    cfg = model.config  # a checkpoint's own architecture, with this config's run-time settings
    parts = {"speech": model.speech, "vision": model.vision, "text": model.text, "fusion": model.fusion,
             "decoder": model.decoder}
    sizes = {}
    for name, module in parts.items():
        if module is None:
            continue  # no text encoder
        total, trainable = _count(module)
        freeze = {"fusion": "full", "text": "frozen"}.get(name) or getattr(cfg, name).freeze.value
        sizes[name] = {"parameters": total, "trainable": trainable, "freeze": freeze}
    if as_json:
        typer.echo(json.dumps({"config": config_to_dict(cfg), "components": sizes}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mmdialog model '{cfg.name}'")
    for column in ("component", "source", "parameters", "trainable", "policy"):
        table.add_column(column)
    modalities = ["image", "audio", "text"] if model.text else ["image", "audio"]
    projectors = [getattr(cfg.fusion, modality).kind.value for modality in modalities]
    sources = {"speech": cfg.speech.name, "vision": cfg.vision.name, "text": cfg.text.name,
               "decoder": cfg.decoder.name, "fusion": " / ".join(projectors)}
    for name, size in sizes.items():
        table.add_row(name, sources[name] or "built from config", f"{size['parameters']:,}",
                      f"{size['trainable']:,}", size["freeze"])
    Console().print(table)


@app.command()
@reports_errors
def chat(
    config: ConfigOption = None,
    overrides: Overrides = None,
    text: Annotated[str | None, typer.Option("--text", help="Ask one question and exit.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="A picture to show.")] = None,
    audio: Annotated[str | None, typer.Option("--audio", help="A spoken question (any audio file).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on the last line.")] = False,
    audio_dir: Annotated[str | None, typer.Option(help="Where spoken replies are written as WAV.")] = None,
) -> None:
    """Talk to the assistant: one turn with --text/--image/--audio, or a conversation in the terminal."""
    from pathlib import Path

    from mmdialog.chat import default_audio_folder, one_turn, repl, reply_json
    from mmdialog.pipeline import DialoguePipeline

    pipeline = DialoguePipeline.from_config(config, overrides or [])
    folder = Path(audio_dir) if audio_dir else default_audio_folder()
    if text is None and image is None and audio is None:
        repl(pipeline, folder)
        return
    reply, audio_path = one_turn(pipeline, text, image, audio, folder)
    if as_json:
        typer.echo(reply_json(reply, audio_path))
    else:
        if reply.transcript:
            typer.echo(f"(heard: {reply.transcript})")
        typer.echo(reply.text)
    if reply.error:
        raise typer.Exit(1)


@app.command()
@reports_errors
def bench(
    config: ConfigOption = None,
    overrides: Overrides = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as one JSON object.")] = False,
    out: Annotated[str, typer.Option("--out", help="Folder for bench.json, bench.png and the inputs.")] = "bench",
    repeats: Annotated[int, typer.Option(help="Runs of every scenario on each side.")] = 5,
    concurrency: Annotated[str, typer.Option(help="Parallel sessions to sweep, comma-separated; '' skips.")] = (
        "1,2,4,8"),
    random_weights: Annotated[bool, typer.Option(
        "--random-weights", help="The preset's shapes with random weights (configs/shapes/): no download.")] = False,
    reply_tokens: Annotated[int, typer.Option(help="With --random-weights: tokens per reply.")] = 16,
    train_steps: Annotated[int, typer.Option(help="Also time this many training steps (0: no training).")] = 0,
) -> None:
    """Latency of every stage and time to first audio: ours against a naive cascade, in one process."""
    from importlib import resources
    from pathlib import Path

    from mmdialog.benchmark.report import write_report
    from mmdialog.benchmark.runner import FixedSentenceVoice, run_benchmark
    from mmdialog.config import load_config
    from mmdialog.errors import ConfigError
    from mmdialog.pipeline import DialoguePipeline

    if random_weights:
        name = load_config(config, overrides or []).name
        if not resources.files("configs").joinpath("shapes", f"{name}.yaml").is_file():
            raise ConfigError(f"--random-weights: the '{name}' preset has no shapes file (configs/shapes/{name}.yaml)")
        config = f"shapes/{name}"
    pipeline = DialoguePipeline.from_config(config, overrides or [])
    if random_weights and pipeline.speech_out is not None:
        pipeline.speech_out = FixedSentenceVoice(pipeline.speech_out)  # random weights write no words to say
    levels = tuple(int(n) for n in concurrency.split(",") if n.strip())
    report = run_benchmark(pipeline, Path(out) / "inputs", repeats=repeats, concurrency=levels,
                           forced_tokens=reply_tokens if random_weights else None)
    if train_steps:
        from mmdialog.benchmark.training_speed import training_speed

        report["training"] = training_speed(load_config(config, overrides or []), steps=train_steps)
    data, plot = write_report(report, Path(out))
    if as_json:
        typer.echo(json.dumps(report))
        return
    for name, scenario in report["scenarios"].items():
        ours, naive = scenario["ours"]["stages_ms"], scenario["naive"]["stages_ms"]
        stage = "ttfa" if "ttfa" in ours else "total"
        typer.echo(f"{name:22} {stage} median ours {ours[stage]['median']:8.1f} ms   naive "
                   f"{naive[stage]['median']:8.1f} ms   x{scenario['ratio_naive_over_ours'].get(stage, 0):.2f}")
    for level in report["concurrency"]:
        typer.echo(f"{level['sessions']} sessions: {level['turns_per_second']:.2f} turns/s, "
                   f"p90 TTFA {level['ttfa_ms']['p90']:.0f} ms")
    if "training" in report:
        speed = report["training"]
        typer.echo(f"training on {speed['device']} ({speed['mixed_precision']}): {speed['steps_per_second']:.2f} "
                   f"steps/s, {speed['examples_per_second']:.1f} examples/s at batch {speed['batch_size']}")
    typer.echo(f"peak RSS {report['peak_rss_mb']:.0f} MB; wrote {data} and {plot}")


@app.command()
@reports_errors
def synth(
    out: Annotated[str, typer.Option("--out", help="Folder to write the world into.")],
    seed: Annotated[int, typer.Option(help="Same seed, same world, byte for byte.")] = 0,
    scenes: Annotated[int, typer.Option(help="Training scenes (validation and test scale with it).")] = 3000,
    spoken: Annotated[bool, typer.Option(help="Synthesize spoken questions (Piper + espeak-ng).")] = True,
) -> None:
    """Generate the synthetic multimodal dialogue world (images, typed and spoken questions, splits)."""
    from pathlib import Path

    from mmdialog.synth import generate_world

    summary = generate_world(Path(out), seed=seed, scenes_train=scenes, scenes_valid=max(1, scenes // 15),
                             scenes_test=max(1, scenes // 7), spoken=spoken)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "timings"}, indent=1))


@app.command()
@reports_errors
def serve(
    config: ConfigOption = None,
    overrides: Overrides = None,
    kiosk: Annotated[bool, typer.Option("--kiosk", help="Full screen, touch-sized, resets when left idle.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (default: app.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (default: app.port).")] = None,
) -> None:
    """Serve the assistant as a web page (and an HTTP API for gradio_client) until Ctrl-C."""
    from app.server import serve as serve_app

    serve_app(config, overrides or [], kiosk=kiosk, host=host, port=port)


@app.command()
@reports_errors
def download(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Fetch every model a config needs into the usual caches, so that it runs without internet afterwards."""
    from mmdialog.config import load_config
    from mmdialog.model_store import fetch_all

    fetch_all(load_config(config, overrides or []), typer.echo)


@app.command()
@reports_errors
def bundle(
    out: Annotated[str, typer.Option("--out", help="The new folder to write.")],
    config: ConfigOption = None,
    overrides: Overrides = None,
    accept_non_commercial: Annotated[bool, typer.Option(
        "--accept-non-commercial", help="Also bundle models under non-commercial terms (XTTS-v2's CPML).")] = False,
) -> None:
    """Write a folder that runs on a machine without internet: `mmdialog serve --config OUT/config.yaml`."""
    from pathlib import Path

    from mmdialog.bundle import bundle as write_bundle
    from mmdialog.config import DEFAULT_PRESET, load_config

    write_bundle(load_config(config, overrides or []), Path(out), accept_non_commercial,
                 source=config or DEFAULT_PRESET, report=typer.echo)


@app.command()
@reports_errors
def train(
    config: ConfigOption = None,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint.")] = False,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip and count bad dialogues.")] = False,
) -> None:
    """Fine-tune the fusion layers (and LoRA / full weights, as configured) on JSONL dialogues.

    Several processes or GPUs: `accelerate launch [options] -m mmdialog.cli train --config C ...`.
    """
    from mmdialog.config import load_config
    from mmdialog.training.trainer import Trainer

    cfg = load_config(config, overrides or [])
    if skip_bad:
        cfg.train.skip_bad = True
    trainer = Trainer(cfg)
    report = trainer.data_report
    trainer.accelerator.print(f"data: {report.dialogues} dialogues, {report.targets} targets"
                              + (f", {report.skipped} bad ones skipped" if report.skipped else ""))
    result = trainer.train(resume=resume)
    trainer.accelerator.print(
        f"done: {result.steps} steps, last training loss {result.final_train_loss}, "
        f"best validation loss {result.best_eval_loss}; model in {result.output_dir / 'model'}"
    )


@app.command("eval")
@reports_errors
def evaluate(
    config: ConfigOption = None,
    overrides: Overrides = None,
    data: Annotated[str | None, typer.Option("--data", help="JSONL file, or a folder with test.jsonl.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    limit: Annotated[int | None, typer.Option(help="Score only the first N examples.")] = None,
    ablations: Annotated[bool, typer.Option("--ablations", help="Also with image features zeroed and with "
                                            "speech as features only.")] = False,
    hear: Annotated[bool, typer.Option("--hear", help="Transcribe every clip with this config's speech settings, "
                                       "as chat and serve do, instead of using the data's transcripts.")] = False,
) -> None:
    """Loss, perplexity, BLEU / chrF, ROUGE-L and exact match, by modality (and task family / form)."""
    from pathlib import Path

    from mmdialog.config import load_config
    from mmdialog.data.dataset import DialogueDataset
    from mmdialog.data.format import load_dialogues, without_transcripts
    from mmdialog.errors import ConfigError
    from mmdialog.evaluation import most_frequent_answer_rate, report, score_dataset
    from mmdialog.loading import load_model
    from mmdialog.settings import SpeechMode

    cfg = load_config(config, overrides or [])
    source = data or cfg.train.eval_data
    if not source:
        raise ConfigError("nothing to evaluate: give --data FILE.jsonl (or set train.eval_data)")
    path = Path(source) / "test.jsonl" if Path(source).is_dir() else Path(source)
    model = load_model(cfg, overrides or [])
    dialogues, _ = load_dialogues(path)
    if hear:
        dialogues = without_transcripts(dialogues)
    results = {}
    runs = [("normal", set(), None)]
    if ablations:
        runs += [("image_zeroed", {"image"}, None), ("speech_features_only", set(), SpeechMode.features)]
    chosen_mode = model.config.speech.mode
    # One dataset per speech mode: its cache keeps each clip's states and transcript, so runs in the same mode
    # (normal, image zeroed) hear every clip once. Zeroing happens in the model, after the cache.
    datasets: dict[SpeechMode, DialogueDataset] = {}
    for name, zeroed, mode in runs:
        model.zeroed_modalities = zeroed
        model.config.speech.mode = mode = mode or chosen_mode
        if mode not in datasets:
            datasets[mode] = DialogueDataset(dialogues, model)
        scored = score_dataset(model, datasets[mode], limit=limit)
        results[name] = report(scored)
        if name == "normal":
            results["chance_by_family"] = most_frequent_answer_rate(scored)
    model.zeroed_modalities, model.config.speech.mode = set(), chosen_mode
    if as_json:
        typer.echo(json.dumps(results))
        return
    _print_report(results)


def _print_report(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for run, tables in results.items():
        if run == "chance_by_family":
            continue
        table = Table(title=run)
        for column in ("group", "examples", "exact match", "loss", "BLEU", "chrF", "ROUGE-L"):
            table.add_column(column)
        rows = [("overall", tables["overall"])] + [
            (f"{key[3:]}={value}", metrics) for key, groups in tables.items() if key.startswith("by_")
            for value, metrics in groups.items()]
        for label, m in rows:
            table.add_row(label, str(m["examples"]), f"{m['exact_match']:.3f}", f"{m['loss']:.3f}",
                          f"{m['bleu']:.1f}", f"{m['chrf']:.1f}", f"{m['rouge_l']:.3f}")
        console.print(table)


data_app = typer.Typer(no_args_is_help=True, help="Check and convert training data.")
app.add_typer(data_app, name="data")
app.add_typer(feedback_app, name="feedback")


@data_app.command("validate")
@reports_errors
def data_validate(
    path: Annotated[str, typer.Argument(help="A JSONL dialogue file.")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Count bad dialogues instead of failing.")] = False,
) -> None:
    """Check every dialogue and media file; problems are listed with file and line."""
    from mmdialog.data.format import load_dialogues

    dialogues, report = load_dialogues(path, skip_bad=skip_bad)
    for problem in report.problems:
        typer.echo(f"skipped {problem}", err=True)
    typer.echo(f"{report.dialogues} dialogues, {report.targets} training targets, {report.skipped} skipped")


@data_app.command("convert-llava")
@reports_errors
def data_convert_llava(
    source: Annotated[str, typer.Argument(help="LLaVA-Instruct JSON (or JSONL) file.")],
    destination: Annotated[str, typer.Argument(help="The JSONL file to write.")],
    image_folder: Annotated[str, typer.Option(help="Where the images are, relative to the output.")] = "images",
) -> None:
    """Convert LLaVA conversations (human/gpt, <image>) to mmdialog's JSONL format."""
    from pathlib import Path

    from mmdialog.data.llava import convert_llava

    count = convert_llava(Path(source), Path(destination), image_folder)
    typer.echo(f"wrote {count} dialogues to {destination}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
