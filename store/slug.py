"""Safe file names for class names: the only way a class name becomes part of a path.

``slugify`` maps any string (``../``, ``/``, NUL, control characters, 500 characters, non-Latin
scripts) to a short name of ``[a-z0-9-]`` that cannot escape its folder, and keeps distinct names
distinct by appending a short hash whenever the readable part is not the name itself (or the name
already ends like a hashed slug, so ``"red-fox-e4b9541d"`` cannot collide with the slug of ``"red fox"``):

>>> slugify("red-fox")
'red-fox'
>>> slugify("red fox")
'red-fox-e4b9541d'
>>> slugify("../etc/passwd")
'etc-passwd-7fef78f5'
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_READABLE = 60
# Names that end like a hashed slug are hashed again: identity slugs never end this way.
_HASHED_TAIL = re.compile(r"-[0-9a-f]{8}$")


def slugify(name: str) -> str:
    """A lowercase ``[a-z0-9-]`` slug of ``name``; lossy slugs get an 8-hex-digit hash suffix."""
    text = unicodedata.normalize("NFKD", name)
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    readable = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:MAX_READABLE].strip("-")
    if readable and readable == name and not _HASHED_TAIL.search(name):
        return readable
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else f"class-{digest}"
