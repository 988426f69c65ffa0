"""Report thumbnails: ``report/thumbs/<sha256>.webp``, made once per image and kept (cached by content hash).

- :class:`Thumbs` lists the folder once, then :meth:`Thumbs.name` returns the thumbnail's file name for an
  image (making it when missing) or ``None`` when the image cannot be read. The name is the image's sha256,
  so a rerun, a resumed run or ``python -m agent.report`` finds it and never decodes that image again.
- A thumbnail is at most :data:`~agent.readout.report_pages.THUMB_PX` pixels on its longer side, lossy
  WebP (a 512-px PNG of ~400 KB becomes ~5 KB); written through a temp name and a rename, so a killed
  report leaves no half file that a later one would trust.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from PIL import Image

from agent.readout.report_pages import THUMB_PX
from store.blobs import is_sha256

__all__ = ["Thumbs"]

LOG = logging.getLogger(__name__)
QUALITY = 70


class Thumbs:
    """The thumbnail folder of one report. ``made`` counts the thumbnails this instance wrote."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # One listing instead of one stat per image: 3x10^5 images are 3x10^5 names, ~30 MB of set at most.
        self.known = {entry.name for entry in os.scandir(folder) if entry.name.endswith(".webp")}
        self.made = 0

    def name(self, sha: str | None, source: Path | None) -> str | None:
        """``<sha>.webp`` for the image at ``source`` (content ``sha``); ``None`` when there is none to show."""
        if not sha or not is_sha256(sha):
            return None
        name = f"{sha}.webp"
        if name in self.known:
            return name
        if source is None or not self._make(source, self.folder / name):
            return None
        self.known.add(name)
        self.made += 1
        return name

    @staticmethod
    def _make(source: Path, dest: Path) -> bool:
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
        try:
            with Image.open(source) as image:
                image.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at reduced size, much faster
                small = image.convert("RGB")
                small.thumbnail((THUMB_PX, THUMB_PX))
                small.save(tmp, "WEBP", quality=QUALITY, method=0)
            os.replace(tmp, dest)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # missing or unreadable: no thumbnail
            LOG.debug("no thumbnail for %s: %s", source, exc)
            tmp.unlink(missing_ok=True)
            return False
        return True
