"""Synthetic, deterministic content for the OpenAI-compatible simulator (``scripts/sim/server.py``).

THIS IS A SIMULATOR: every sentence and image made here is synthetic. Nothing here is a model; the text
only has the *shape* of what the LTGC prompts ask for, so the agent, its parser and its caches can be
exercised offline.

Contract (all pure functions of their inputs):

- ``classify(text) -> PromptKind`` keys on the phrases in ``prompts/*.txt`` listed in docs/INTERFACES.md
  (``describe``, ``reminder``, ``extend``, ``dedupe``, ``summarize``, ``refine``, else ``other``).
- ``chat_answer(text, images, *, seed, salt) -> (kind, answer)`` — the answer that kind of prompt expects:
  describe/reminder → one Template 1 sentence whose feature depends on the image bytes; extend → a numbered
  list of ``count`` (<= 40) template sentences walked from a per-class seeded vocabulary, with ~15 % repeats
  on purpose and otherwise items not yet in the prompt's list; dedupe → the prompt's list without exact or
  near-exact repeats, copied exactly; summarize → one Template 2 sentence; refine → a refined Template 1
  sentence derived from the quoted description. ``salt`` is a digest of the whole request, so the same
  request always gets the same answer and a changed request may get a different one.
- ``png_image(prompt, side, index, seed) -> bytes`` — a small PNG whose colours and pattern come from a hash.

>>> classify("Please use Template 2 to summarize the most distinctive features of class red fox.")
'summarize'
>>> dedupe_items(["A photo of the class x, with a.", "a photo of the class x,  with a", "B."])
['A photo of the class x, with a.', 'B.']
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import re
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw

from scripts.sim.vocab import COLOURS, FEATURES, PATTERNS, SCENES

PromptKind = Literal["describe", "reminder", "extend", "dedupe", "summarize", "refine", "other"]

MAX_EXTEND_ITEMS = 40  # the most items one extend answer lists, whatever count the prompt asks for
REPEAT_RATE = 0.15  # share of extend items that repeat on purpose, so the repetition check has work to do

# Key phrases (docs/INTERFACES.md). The reminder is tested before describe: a conversation that carries a
# reminder also carries the original describe prompt in an earlier turn.
_KIND_PHRASES: tuple[tuple[PromptKind, str], ...] = (
    ("reminder", "Your answer did not follow Template 1"),
    ("describe", "briefly describe the image of the class"),
    ("extend", "Besides these descriptions mentioned above"),
    ("dedupe", "Please exclude any repetitive"),
    ("summarize", "summarize the most distinctive features of class"),
    ("refine", "doesn't seem to be representative of the class"),
)

# Class-name patterns are anchored on the prompt phrases (greedy up to the fixed text that follows), so
# names with commas, spaces, parentheses, dots or non-ASCII letters ("tench, Tinca tinca") come out whole.
_CLASS_PATTERNS: dict[str, re.Pattern[str]] = {
    "describe": re.compile(r"briefly describe the image of the class (?P<y>.+)\.[ \t]*$", re.M),
    "reminder": re.compile(r'starts with "A photo of the class (?P<y>.+)," and follows Template 1', re.M),
    "extend": re.compile(r"\{specific scenes\} for the class (?P<y>.+)\.[ \t]*$", re.M),
    "dedupe": re.compile(r"\{specific scenes\} for class (?P<y>.+) in this descriptions list\.", re.M),
    "summarize": re.compile(r"summarize the most distinctive features of class (?P<y>.+)\.[ \t]*$", re.M),
    "refine": re.compile(r"representative of the class (?P<y>.+)\. Could you refine", re.M),
}
_FALLBACK_CLASS = (
    re.compile(r"^Descriptions of the class (?P<y>.+):[ \t]*$", re.M),
    re.compile(r"A photo of the class (?P<y>[^,\n]+),"),
)
_COUNT = re.compile(r"^List (?P<n>\d+) new descriptions", re.M)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(?P<item>.+?)\s*$")
_REFINE_DESC = re.compile(r'This description "(?P<d>.*)" doesn\'t seem to be representative', re.S)
_FEATURE_SCENE = re.compile(r"^A photo of the class .+?, with (?P<f>.+?) in (?P<s>[^.]+)\.?$")


def classify(text: str) -> PromptKind:
    """The prompt kind of ``text`` (the last user turn, or the whole conversation), by key phrase."""
    for kind, phrase in _KIND_PHRASES:
        if phrase in text:
            return kind
    return "other"


def class_name_of(text: str, kind: PromptKind) -> str:
    """The class name the prompt is about, or ``"object"`` when the prompt names none."""
    pattern = _CLASS_PATTERNS.get(kind)
    match = pattern.search(text) if pattern else None
    for fallback in _FALLBACK_CLASS:
        if match:
            break
        match = fallback.search(text)
    return match.group("y").strip() if match else "object"


def chat_answer(text: str, images: Sequence[bytes], *, seed: int, salt: str) -> tuple[PromptKind, str]:
    """The simulator's reply to a chat request whose user text is ``text``; see the module docstring."""
    kind = classify(text)
    y = class_name_of(text, kind)
    rng = random.Random(f"{seed}|{salt}")
    if kind in ("describe", "reminder"):
        return kind, describe_sentence(y, images, rng)
    if kind == "extend":
        count = int(m.group("n")) if (m := _COUNT.search(text)) else 5
        existing = listed_items(text, "Besides these descriptions mentioned above")
        return kind, numbered(extend_items(y, existing, count, seed=seed, rng=rng))
    if kind == "dedupe":
        return kind, numbered(dedupe_items(listed_items(text, "Please exclude any repetitive")))
    if kind == "summarize":
        return kind, summarize_sentence(y, listed_items(text, "Please use Template 2"), seed=seed)
    if kind == "refine":
        found = _REFINE_DESC.search(text)
        return kind, refine_sentence(y, found.group("d") if found else "", seed=seed)
    return kind, f"I am a simulator and this prompt has no template I know. It mentioned the class {y}."


def nontemplate_answer(text: str) -> str:
    """Chat text that ignores every template (the ``nontemplate`` fault): no "A photo of the class"."""
    y = class_name_of(text, classify(text))
    return f"Sure! Here is what I think about {y}: it is quite interesting and often photographed."


# --- the five answers ---------------------------------------------------------------------------------


def describe_sentence(y: str, images: Sequence[bytes], rng: random.Random) -> str:
    """Template 1 sentence whose feature comes from the image: its dominant colour and a byte hash."""
    if not images:
        return sentence1(y, rng.choice(FEATURES), rng.choice(SCENES))
    data = b"".join(images)
    digest = hashlib.sha256(data).digest()
    colour = dominant_colour_name(images[0])
    # The hash picks the pattern and scene, so two images of one colour still read differently.
    pattern = f"a {PATTERNS[digest[0] % len(PATTERNS)]} look"
    feature = pattern if colour == "unreadable" else f"mostly {colour} tones and {pattern}"
    return sentence1(y, feature, SCENES[int.from_bytes(digest[1:3], "big") % len(SCENES)])


def extend_items(
    y: str, existing: Sequence[str], count: int, *, seed: int, rng: random.Random
) -> list[str]:
    """``min(count, 40)`` items: ~15 % repeats (of ``existing`` or of earlier answer items), else new ones.

    New items walk the class's seeded vocabulary in a fixed order and skip anything already listed, so
    repeated extend calls always make progress until the vocabulary (1,600 pairs) runs out.
    """
    seen = {normalise(item) for item in existing}
    fresh = (s for s in class_vocabulary(y, seed) if normalise(s) not in seen)
    out: list[str] = []
    for _ in range(min(max(count, 0), MAX_EXTEND_ITEMS)):
        pool = [*existing, *out]
        if pool and rng.random() < REPEAT_RATE:
            out.append(near_copy(rng.choice(pool), rng))
            continue
        item = next(fresh, None)
        if item is None:
            break
        out.append(item)
    return out


def dedupe_items(items: Sequence[str]) -> list[str]:
    """``items`` without exact or near-exact repeats (same ``normalise`` key), first copy kept verbatim."""
    seen: set[str] = set()
    kept: list[str] = []
    for item in items:
        key = normalise(item)
        if key and key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def invented_item(y: str, items: Sequence[str], seed: int) -> str:
    """A template sentence absent from ``items`` (the ``dedupe_invent`` knob: a dedupe that adds one)."""
    seen = {normalise(item) for item in items}
    for candidate in reversed(class_vocabulary(y, seed)):
        if normalise(candidate) not in seen:
            return candidate
    return sentence1(y, "an invented feature", "an invented scene")


def summarize_sentence(y: str, descriptions: Sequence[str], *, seed: int) -> str:
    """Template 2: the three features named most often in ``descriptions`` (class vocabulary otherwise)."""
    counts: dict[str, int] = {}
    for item in descriptions:
        if m := _FEATURE_SCENE.match(item.strip()):
            feature = " ".join(m.group("f").split())
            counts[feature] = counts.get(feature, 0) + 1
    ranked = sorted(counts, key=lambda f: (-counts[f], f))
    for feature in class_features(y, seed):
        if len(ranked) >= 3:
            break
        if feature not in ranked:
            ranked.append(feature)
    top = ranked[:3]
    return f"A photo of the class {y} with {', '.join(top[:-1])} and {top[-1]}."


def refine_sentence(y: str, description: str, *, seed: int) -> str:
    """A Template 1 sentence that keeps the description's scene and leads with a class-typical feature.

    At most three feature phrases are kept, so refining the refined text again stays short.
    """
    match = _FEATURE_SCENE.match(description.strip())
    features = [match.group("f")] if match else []
    scene = match.group("s") if match else SCENES[_digest_int(description) % len(SCENES)]
    typical = class_features(y, seed)
    start = _digest_int(description) % len(typical)
    extra = next((f for f in typical[start:] + typical[:start] if f not in description), typical[start])
    return sentence1(y, " and ".join([f"clearly visible {extra}", *features][:3]), scene)


# --- helpers ------------------------------------------------------------------------------------------


def sentence1(y: str, feature: str, scene: str) -> str:
    """``A photo of the class <y>, with <feature> in <scene>.`` (Template 1 filled in)."""
    return f"A photo of the class {y}, with {feature} in {scene}."


def class_vocabulary(y: str, seed: int) -> list[str]:
    """Every (feature × scene) sentence for class ``y``, in an order seeded by (seed, class)."""
    rng = random.Random(f"vocab|{seed}|{y}")
    features, scenes = class_features(y, seed), list(SCENES)
    rng.shuffle(scenes)
    # Interleave so consecutive items differ in both feature and scene.
    return [
        sentence1(y, features[(i + j) % len(features)], scenes[j])
        for i in range(len(features))
        for j in range(len(scenes))
    ]


def class_features(y: str, seed: int) -> list[str]:
    """The feature vocabulary in the class's own seeded order (its first items read as "typical")."""
    features = list(FEATURES)
    random.Random(f"features|{seed}|{y}").shuffle(features)
    return features


def near_copy(item: str, rng: random.Random) -> str:
    """``item`` verbatim (2 in 3) or with one doubled space (a near-exact repeat that ``normalise`` folds)."""
    if rng.random() < 2 / 3 or " " not in item:
        return item
    spaces = [i for i, ch in enumerate(item) if ch == " "]
    at = spaces[rng.randrange(len(spaces))]
    return item[:at] + " " + item[at:]


def normalise(text: str) -> str:
    """Case-, spacing- and punctuation-insensitive key: ``"A  Cat, red." -> "a cat red"``."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def listed_items(text: str, stop_phrase: str) -> list[str]:
    """Items of the numbered list that follows "Descriptions of the class ...:" and ends before ``stop_phrase``."""
    head = text.split(stop_phrase, 1)[0]
    start = _FALLBACK_CLASS[0].search(head)
    body = head[start.end() :] if start else head
    items = []
    for line in body.splitlines():
        if m := _LIST_ITEM.match(line):
            items.append(m.group("item"))
    return items


def numbered(items: Sequence[str]) -> str:
    """``["a", "b"] -> "1. a\\n2. b"``."""
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))


def dominant_colour_name(data: bytes) -> str:
    """Name of the colour nearest the image's mean RGB; ``"unreadable"`` when ``data`` is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            r, g, b = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
    except Exception:  # any undecodable upload still gets an answer, as a lenient server would give
        return "unreadable"
    return min(COLOURS, key=lambda c: (c[1] - r) ** 2 + (c[2] - g) ** 2 + (c[3] - b) ** 2)[0]


def decode_data_uri(url: str) -> bytes | None:
    """The bytes of a ``data:<mime>;base64,<payload>`` URI, or ``None`` for anything else."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=False)
    except (binascii.Error, ValueError):
        return None


def png_image(prompt: str, *, side: int, index: int = 0, seed: int = 0) -> bytes:
    """A ``side``×``side`` PNG: background, stripe/check/disc pattern and colours all from a prompt hash."""
    digest = hashlib.sha256(f"{seed}|{index}|{prompt}".encode()).digest()
    back, fore = tuple(digest[0:3]), tuple(digest[3:6])
    img = Image.new("RGB", (side, side), back)
    draw = ImageDraw.Draw(img)
    step = max(2, side // (2 + digest[6] % 6))
    style = digest[7] % 3
    if style == 0:  # stripes
        for x in range(0, side, 2 * step):
            draw.rectangle((x, 0, x + step - 1, side - 1), fill=fore)
    elif style == 1:  # checks
        for x in range(0, side, step):
            for y in range((x // step) % 2 * step, side, 2 * step):
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=fore)
    else:  # disc
        draw.ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=fore)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _digest_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
