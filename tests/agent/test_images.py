"""agent/providers/images.py: what a vision request sends, and how a generated image is checked (pure)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from agent.providers.images import InputImageError, data_uri, decode_b64_image, image_format, prepare_image
from agent.providers.retry import BadResponse


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_small_jpeg_or_png_is_sent_byte_for_byte() -> None:
    png = _encode(Image.new("RGB", (40, 30), "green"), "PNG")
    assert prepare_image(png, 64) == (png, "image/png")
    jpg = _encode(Image.new("RGB", (40, 30), "green"), "JPEG")
    assert prepare_image(jpg, 40) == (jpg, "image/jpeg")


def test_large_images_are_downscaled_keeping_aspect_and_alpha() -> None:
    sent, mime = prepare_image(_encode(Image.new("RGB", (300, 100), "red"), "PNG"), 60)
    assert mime == "image/jpeg" and Image.open(io.BytesIO(sent)).size == (60, 20)
    sent, mime = prepare_image(_encode(Image.new("RGBA", (100, 300), (0, 0, 0, 0)), "PNG"), 60)
    img = Image.open(io.BytesIO(sent))
    assert mime == "image/png" and img.size == (20, 60) and img.mode == "RGBA"


def test_other_formats_are_re_encoded_even_when_small() -> None:
    sent, mime = prepare_image(_encode(Image.new("RGB", (10, 10), "blue"), "BMP"), 64)
    assert mime == "image/jpeg" and Image.open(io.BytesIO(sent)).format == "JPEG"


def test_unreadable_input_is_an_input_error() -> None:
    with pytest.raises(InputImageError, match="not a readable image"):
        prepare_image(b"hello", 64)


def test_generated_bytes_are_checked() -> None:
    png = _encode(Image.new("RGB", (16, 16), "white"), "PNG")
    assert decode_b64_image(base64.b64encode(png).decode()) == (png, "png")
    assert image_format(_encode(Image.new("RGB", (16, 16)), "JPEG")) == "jpg"
    for broken in (b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, png[: len(png) // 2]):
        with pytest.raises(BadResponse):
            image_format(broken)
    with pytest.raises(BadResponse, match="base64"):
        decode_b64_image("not base64!!")


def test_data_uri() -> None:
    assert data_uri(b"ab", "image/png") == "data:image/png;base64,YWI="
