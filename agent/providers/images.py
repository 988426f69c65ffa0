"""Pure image helpers for the providers: prepare an input image for a vision request, check an output.

- :func:`prepare_image` — downscale so the longer side is at most ``max_side`` and return the bytes that
  will be sent with their MIME type. A JPEG or PNG already small enough is sent byte-for-byte (no
  re-encode, so its hash — part of the cache key — equals the file's hash). Other formats, and anything
  resized, become PNG when they carry transparency and JPEG (quality 90) otherwise.
- :func:`image_format` — the file extension of valid image bytes, or :class:`BadResponse` when the bytes
  do not decode (a server answer that is not an image is a malformed answer, and retryable).
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from agent.providers.retry import BadResponse

_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
_MIME = {"png": "image/png", "jpg": "image/jpeg"}


class InputImageError(ValueError):
    """An input image (from the user's dataset) that PIL cannot read."""


def prepare_image(data: bytes, max_side: int) -> tuple[bytes, str]:
    """``(bytes_to_send, mime)`` for one vision input; see the module docstring."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = img.format or ""
            if max(img.size) <= max_side and fmt in ("JPEG", "PNG"):
                return data, _MIME[_EXT[fmt]]
            out = img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputImageError(f"not a readable image ({exc})") from None
    out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # keeps the aspect ratio
    has_alpha = out.mode in ("RGBA", "LA") or (out.mode == "P" and "transparency" in out.info)
    buf = io.BytesIO()
    if has_alpha:
        out.convert("RGBA").save(buf, format="PNG", optimize=False)
        return buf.getvalue(), "image/png"
    out.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "image/jpeg"


def data_uri(data: bytes, mime: str) -> str:
    """``data_uri(b"ab", "image/png") -> "data:image/png;base64,YWI="``"""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_b64_image(text: str) -> tuple[bytes, str]:
    """Decode a ``b64_json`` answer and check it is an image: ``(bytes, ext)`` or :class:`BadResponse`."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BadResponse("b64_json is not valid base64") from None
    return data, image_format(data)


def image_format(data: bytes) -> str:
    """Extension (``png``, ``jpg``, ``webp``, ``gif``) of decodable image bytes; :class:`BadResponse` else."""
    if not data:
        raise BadResponse("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            img.verify()  # structure and chunk checksums
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # verify() misses a truncated pixel stream; decoding does not
    except Exception as exc:  # PIL raises many types for broken files; all mean "not an image"
        raise BadResponse(f"image bytes do not decode ({type(exc).__name__})") from None
    ext = _EXT.get(fmt)
    if ext is None:
        raise BadResponse(f"unsupported image format {fmt or 'unknown'!r}")
    return ext
