"""Text as a voice should read it: markup and emoji removed, numbers and abbreviations written out, and
split into sentences small enough to synthesize one at a time (so the first one plays while the rest render).

Voices read letters and punctuation; "$3.50", "Dr." or "**bold**" come out as noise or get spelled.
The spelled-out forms are English; `strip_markup` alone is safe for any language.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from itertools import pairwise

from num2words import num2words

# Markdown and friends: a reply from a language model often carries them; none of it should be heard.
_CODE_BLOCK_RE = re.compile(r"```.*?(```|$)", re.DOTALL)
_IMAGE_RE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL_RE = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_LINE_MARK_RE = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,3}[.)]\s+)")
_RULE_RE = re.compile(r"^\s*([-*_=])(\s*\1){2,}\s*$")
_EMPHASIS_RE = re.compile(r"(?<!\w)(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)")
# Symbols, emoji and their joiners, variation selectors and keycaps: heard as nothing, or as "symbol".
_DROP_CATEGORIES = {"So", "Sk", "Cf", "Cs", "Co", "Me"}
_KEEP_SYMBOLS = {"°"}  # the one "other symbol" that is read out

# Titles precede a name, so the period after them never ends a sentence.
_TITLES = {"Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Prof.": "Professor"}
_INLINE_ABBREVIATIONS = {
    "e.g.": "for example", "i.e.": "that is", "vs.": "versus", "approx.": "approximately", "cf.": "compare",
}
# These can end a sentence; their period is kept when the next word starts a sentence.
_FINAL_ABBREVIATIONS = {"etc.": "et cetera", "Jr.": "Junior", "Sr.": "Senior"}
# Words whose trailing "." does not end a sentence when splitting raw text (lower case, without the dot).
_NO_BREAK_AFTER = {short[:-1].lower() for short in [*_TITLES, *_INLINE_ABBREVIATIONS, "St."]}

_CURRENCIES = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny"), "¥": ("yen", "sen")}
_IRREGULAR_PLURALS = {"penny": "pence", "yen": "yen", "sen": "sen"}
_SCALES = r"thousand|million|billion|trillion"
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_CURRENCY_RE = re.compile(rf"([$€£¥])\s?({_NUMBER})(?:\s+({_SCALES})\b)?")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-4]):([0-5]\d)\b(?!:\d)(\s?(?:AM|PM)\b)?")
_AM_PM_RE = re.compile(r"(?<=\d)\s?([AaPp])\.?[Mm]\.?(?=\W|$)")
_PERCENT_RE = re.compile(rf"({_NUMBER})\s?%")
_DEGREE_RE = re.compile(rf"({_NUMBER})\s?°\s?([CF]\b)?")
_ORDINAL_RE = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_DECADE_RE = re.compile(r"\b(1[1-9]|20)(\d0)'?s\b")
# Four digits from 1100 to 2099 read as a year ("fifteen hundred people" is fine too).
_YEAR_RE = re.compile(r"(?<![\d.,])(1[1-9]\d\d|20\d\d)(?!\d|[.,]\d)")
_RANGE_RE = re.compile(r"(?<=\d)\s?[-–]\s?(?=\d)")
_NEGATIVE_RE = re.compile(r"(?<![\w.,])[-−](?=\d)")
_NUMBER_RE = re.compile(_NUMBER)
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "%": " percent ", "°": " degrees ",
            "×": " times ", "~": " about ", "#": " "}
_UNITS = {"C": "Celsius", "F": "Fahrenheit"}

_SENTENCE_END_RE = re.compile(r"([.!?…]+)([\"”’')\]]*)(\s+)")
_CLAUSE_END_RE = re.compile(r"(?<=[,;:])\s+")


def strip_markup(text: str) -> str:
    """Remove markdown, URLs and emoji; headings, list items and paragraphs become sentences of their own."""
    text = _CODE_BLOCK_RE.sub(" ", text)
    text = _IMAGE_RE.sub(" ", text)
    text = _LINK_RE.sub(r"\1", text)
    text = _URL_RE.sub(" ", text).replace("℃", "°C").replace("℉", "°F")
    text = "".join(
        ch for ch in unicodedata.normalize("NFC", text)
        if ch in _KEEP_SYMBOLS or unicodedata.category(ch) not in _DROP_CATEGORIES and ch not in "\ufe0e\ufe0f"
    )
    # (text, is a heading / list item / quote) per line; None for a blank line or a rule.
    lines: list[tuple[str, bool] | None] = []
    for line in text.splitlines():
        block = _LINE_MARK_RE.match(line) is not None
        line = _EMPHASIS_RE.sub(r"\2", _LINE_MARK_RE.sub("", line))
        line = re.sub(r"[*_`]", " ", line).replace("|", ", ").strip(" ,")
        if not line or _RULE_RE.match(line):
            lines.append(None)
        else:
            lines.append((line[:1].upper() + line[1:] if block else line, block))
    spoken = []
    for line, following in pairwise([*lines, None]):
        if line is None:
            continue
        text, block = line
        # A heading, a list item or a paragraph's last line ends its sentence even without a full stop;
        # a line that merely wraps runs on into the next.
        if (block or following is None or following[1]) and text[-1] not in ".!?:;,…":
            text += "."
        spoken.append(text)
    return " ".join(" ".join(spoken).split())


def _words(number: str | int) -> str:
    """num2words without its commas (heard as pauses) and hyphens (not every backend's cleaner keeps them)."""
    digits = str(number).replace(",", "")
    spoken = num2words(Decimal(digits) if "." in digits else int(digits))
    return spoken.replace(",", "").replace("-", " ")


def _unit(unit: str, count_words: str = "") -> str:
    """`unit` after an amount: singular after "one", plural otherwise."""
    return unit if count_words == "one" else _IRREGULAR_PLURALS.get(unit, unit + "s")


def _currency(match: re.Match[str]) -> str:
    unit, cent_unit = _CURRENCIES[match.group(1)]
    amount, scale = match.group(2).replace(",", ""), match.group(3)
    if scale:  # "$2.5 million" is "two point five million dollars"
        return f" {_words(amount)} {scale} {_unit(unit)} "
    whole, _, cents = amount.partition(".")
    if len(cents) > 2:  # not a price in cents: "$0.005" is read as a plain number
        return f" {_words(amount)} {_unit(unit)} "
    parts = []
    if int(whole) or not (cents and int(cents)):
        parts.append(f"{_words(whole)} {_unit(unit, _words(whole))}")
    if cents and int(cents):
        cent_words = _words(int(cents.ljust(2, "0")))
        parts.append(f"{cent_words} {_unit(cent_unit, cent_words)}")
    return f" {' and '.join(parts)} "


def _time(match: re.Match[str]) -> str:
    hour, minute, suffix = _words(int(match.group(1))), int(match.group(2)), (match.group(3) or "").strip()
    if minute == 0 and not suffix:
        spoken = f"{hour} hundred" if int(match.group(1)) > 12 else f"{hour} o'clock"  # 14:00, 7:00
    elif minute == 0:
        spoken = f"{hour} {suffix}"
    else:
        spoken = f"{hour} {'oh ' if minute < 10 else ''}{_words(minute)} {suffix}"
    return f" {spoken.strip()} "


def _degrees(match: re.Match[str]) -> str:
    spoken = _words(match.group(1))
    unit = _UNITS.get(match.group(2) or "", "")
    return f" {spoken} {'degree' if spoken == 'one' else 'degrees'} {unit} "


def _spoken_year(year: int) -> str:
    return num2words(year, to="year").replace("-", " ")


def _decade(match: re.Match[str]) -> str:
    year = _spoken_year(int(match.group(1) + match.group(2)))
    # "nineteen ninety" -> "nineteen nineties"; "two thousand" -> "two thousands"
    return f" {year[:-1]}ies " if year.endswith("y") else f" {year}s "


def _sentence_follows(rest: str) -> bool:
    """Whether the text after an abbreviation starts a new sentence (so its period must stay)."""
    return not rest.strip() or re.match(r"\s+[^a-z\s]", rest) is not None


def _ending(spoken: str, match: re.Match[str]) -> str:
    """`spoken` for an abbreviation that may end a sentence: with a period when a new sentence follows."""
    ends = match.group(0).endswith(".") and _sentence_follows(match.string[match.end():])
    return spoken + ("." if ends else "")


def _saint_or_street(match: re.Match[str]) -> str:
    # After a capitalised word it is a street ("Main St."); otherwise a saint ("St. Louis", "visit St. Paul").
    before = match.string[:match.start()].split()
    if before and before[-1][:1].isupper() and before[-1][-1] not in ".!?":
        return _ending("Street", match)
    return "Saint"


def _expand_abbreviations(text: str) -> str:
    for short, long in _TITLES.items():
        text = re.sub(rf"(?<!\w){re.escape(short)}(?=\s)", long, text)
    text = re.sub(r"(?<!\w)St\.(?=\s|$)", _saint_or_street, text)
    text = re.sub(r"(?<!\w)No\.\s?(?=\d)", "number ", text)
    for short, long in _INLINE_ABBREVIATIONS.items():
        text = re.sub(rf"(?<!\w){re.escape(short)}", long, text, flags=re.IGNORECASE)
    for short, long in _FINAL_ABBREVIATIONS.items():
        text = re.sub(rf"(?<!\w){re.escape(short)}", lambda m, long=long: _ending(long, m), text)
    text = _AM_PM_RE.sub(lambda m: _ending(f" {m.group(1).upper()}M", m), text)
    # Dotted initialisms: espeak-ng and Coqui's cleaners both spell "US" or "USA" letter by letter. Only at
    # the very end is the dot surely a full stop ("the U.S. Army" goes on).
    return re.sub(r"\b((?:[A-Z]\.){2,})(?!\w)",
                  lambda m: m.group(1).replace(".", "") + ("" if m.string[m.end():].strip() else "."), text)


def _expand_numbers(text: str) -> str:
    # Ranges first ("$5-10", "10-20%"), then the sign of negative numbers, so neither dash is left behind.
    text = _RANGE_RE.sub(" to ", text)
    text = _NEGATIVE_RE.sub(" minus ", text)
    text = re.sub(r"(?<=[^\W\d])-(?=\d)", " ", text)  # "COVID-19"
    text = _CURRENCY_RE.sub(_currency, text)
    text = re.sub(r"#\s?(?=\d)", " number ", text)
    text = _TIME_RE.sub(_time, text)
    text = _PERCENT_RE.sub(lambda m: f" {_words(m.group(1))} percent ", text)
    text = _DEGREE_RE.sub(_degrees, text)
    text = _ORDINAL_RE.sub(lambda m: f" {num2words(int(m.group(1)), to='ordinal').replace('-', ' ')} ", text)
    text = _DECADE_RE.sub(_decade, text)
    text = _YEAR_RE.sub(lambda m: f" {_spoken_year(int(m.group(1)))} ", text)
    return _NUMBER_RE.sub(lambda m: f" {_words(m.group(0))} ", text)


def normalize_text(text: str) -> str:
    """English text as it should be spoken: no markup, numbers and abbreviations in words, symbols named."""
    text = _expand_numbers(_expand_abbreviations(strip_markup(text)))
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = " ".join(text.split())
    return re.sub(r"\s+([.,!?;:…])", r"\1", text)


def _ends_sentence(before: str, marks: str, after: str) -> bool:
    """Whether punctuation `marks` after the text `before`, followed by `after`, ends a sentence."""
    if after and not (after[0].isupper() or after[0].isdigit() or after[0] in "\"“‘'(["):
        return False  # "3 p.m. and then", "e.g. apples": a sentence does not start in lower case
    if marks[0] != ".":
        return True
    word = before.rsplit(maxsplit=1)[-1].lower() if before.strip() else ""
    # A title ("Dr. Smith"), an initial ("J. Smith") or an initialism ("U.S. Army") is not an ending.
    return word not in _NO_BREAK_AFTER and not re.fullmatch(r"(?:[a-z]\.)*[a-z]", word)


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence over `max_chars` is cut at clause punctuation (some backends refuse long inputs)."""
    parts: list[str] = []
    for clause in _CLAUSE_END_RE.split(sentence):
        if parts and len(parts[-1]) + 1 + len(clause) <= max_chars:
            parts[-1] += " " + clause
        else:
            parts.append(clause)
    return parts


def split_sentences(text: str, min_words: int = 3, max_chars: int = 250) -> list[str]:
    """Sentences of `text` in order; fragments under `min_words` words join their neighbour ("Hi! How are
    you?" is one), and sentences over `max_chars` are cut at commas. Blank lines always end a sentence."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _SENTENCE_END_RE.finditer(paragraph + " "):
            if _ends_sentence(paragraph[start:match.start()], match.group(1), paragraph[match.end():]):
                sentences.append(paragraph[start:match.end()].strip())
                start = match.end()
        if paragraph[start:].strip():
            sentences.append(paragraph[start:].strip())
    merged: list[str] = []
    for sentence in sentences:
        if merged and len(merged[-1].split()) < min_words:
            merged[-1] += " " + sentence
        else:
            merged.append(sentence)
    if len(merged) > 1 and len(merged[-1].split()) < min_words:
        last = merged.pop()
        merged[-1] += " " + last
    return [part for sentence in merged for part in _split_long(sentence, max_chars)]
