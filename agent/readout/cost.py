"""Cost accounting: what one model call cost, from a price table (a TOML data file) and the call's usage.

Contract:

- :func:`load_prices` reads ``agent/prices.toml`` (the default) or the user's ``--prices FILE``; a bad file
  raises :class:`PricesError` with one line (file, key, what is wrong).
- :class:`PriceTable` answers in US dollars and never raises on a call it cannot price:
  ``chat_cost`` / ``image_cost`` / ``call_cost`` return ``None`` for a model missing from the table and
  log one warning per unknown model (not one per call: a run makes thousands).
- ``record_cost(record)`` prices a :class:`store.traces.TraceRecord`: a cache hit and a failed request cost
  ``0.0`` (nothing was billed); an image call reads ``size`` / ``quality`` from the traced request body.
- A dated snapshot name (``gpt-4o-2024-08-06``) falls back to its base name (``gpt-4o``).
- Batch API prices: a call whose trace row says ``meta["transport"] == "batch"`` costs the model's
  ``batch_factor`` times its price (default :data:`DEFAULT_BATCH_FACTOR`, OpenAI's 50 %); :meth:`PriceTable.
  for_row` applies it to any price of a row (the budget reserves with it too).

>>> table = parse_prices({"models": {"m": {"input_per_1m": 2.0, "output_per_1m": 8.0}}}, "t.toml")
>>> table.chat_cost("m", input_tokens=1_000, output_tokens=500)
0.006
>>> table.chat_cost("m-2025-01-31", input_tokens=1_000_000, output_tokens=0)
2.0
>>> table.batch_factor("m")
0.5
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

__all__ = ["DEFAULT_BATCH_FACTOR", "DEFAULT_PRICES", "ModelPrice", "PriceTable", "PricesError", "is_batched",
           "load_prices", "parse_prices"]

LOG = logging.getLogger(__name__)
DEFAULT_PRICES = Path(__file__).resolve().parents[1] / "prices.toml"
_SNAPSHOT_RE = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # OpenAI's dated snapshot suffix
_AUTO = {None, "", "auto"}
_MODEL_KEYS = {"input_per_1m", "output_per_1m", "image_output_per_1m", "image", "default_size", "default_quality",
               "batch_factor"}
DEFAULT_BATCH_FACTOR = 0.5  # OpenAI bills Batch API requests at half price


class PricesError(UsageError):
    """A price file that cannot be used (one line: file, key, what is wrong, how to fix)."""


@dataclass(frozen=True)
class ModelPrice:
    """One model's prices: USD per 1M text tokens, and USD per image by quality then size."""

    input_per_1m: float | None = None
    output_per_1m: float | None = None
    image_output_per_1m: float | None = None  # image models that bill generated images as tokens (gpt-image-1)
    image: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    default_size: str | None = None
    default_quality: str | None = None
    batch_factor: float = DEFAULT_BATCH_FACTOR


@dataclass
class PriceTable:
    """The loaded table plus the set of things already warned about (so each warning shows once)."""

    models: dict[str, ModelPrice]
    source: str = ""
    as_of: str = ""
    _warned: set[str] = field(default_factory=set, repr=False)

    def price_of(self, model: str) -> ModelPrice | None:
        """The model's prices, trying the exact name, then the name without a dated-snapshot suffix."""
        found = self.models.get(model) or self.models.get(_SNAPSHOT_RE.sub("", model))
        if found is None:
            self._warn_once(f"model:{model}", f"no price for model {model!r} in {self.source or 'the price table'}"
                            "; its calls count as unknown cost (add it with --prices FILE)")
        return found

    def chat_cost(self, model: str, *, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """Text/vision chat: tokens x per-1M prices (missing usage counts as 0 tokens)."""
        price = self.price_of(model)
        if price is None:
            return None
        return _round(_tokens(input_tokens, price.input_per_1m) + _tokens(output_tokens, price.output_per_1m))

    def image_cost(
        self, model: str, *, images: int, size: str | None = None, quality: str | None = None,
        input_tokens: int | None = None, output_tokens: int | None = None,
    ) -> float | None:
        """Image generation. When the answer reported its image tokens (``output_tokens``) and the model has
        an ``image_output_per_1m`` price, the bill is computed from that usage, as the API bills it;
        otherwise the per-image list price for (quality, size) x images. Prompt tokens are added if priced."""
        price = self.price_of(model)
        if price is None:
            return None
        if output_tokens is not None and price.image_output_per_1m is not None:
            return _round(_tokens(output_tokens, price.image_output_per_1m) + _tokens(input_tokens, price.input_per_1m))
        per_image = self._per_image(model, price, size, quality)
        if per_image is None:
            return None
        return _round(per_image * images + _tokens(input_tokens, price.input_per_1m))

    def call_cost(
        self, *, model: str, operation: str, input_tokens: int | None = None, output_tokens: int | None = None,
        images: int = 0, size: str | None = None, quality: str | None = None,
        cache_hit: bool = False, status: str = "ok",
    ) -> float | None:
        """The cost of one call; ``0.0`` when nothing was billed (cache hit or failed request)."""
        if cache_hit or status != "ok":
            return 0.0
        if operation == "image_generation":
            return self.image_cost(model, images=images, size=size, quality=quality, input_tokens=input_tokens,
                                   output_tokens=output_tokens)
        return self.chat_cost(model, input_tokens=input_tokens, output_tokens=output_tokens)

    def batch_factor(self, model: str) -> float:
        """What share of the synchronous price a Batch API request of ``model`` costs."""
        found = self.models.get(model) or self.models.get(_SNAPSHOT_RE.sub("", model))
        return found.batch_factor if found is not None else DEFAULT_BATCH_FACTOR

    def for_row(self, record: Any, price: float | None) -> float | None:
        """``price`` of the call on trace row ``record``, at the batch price when it went through a batch."""
        if price is None or not is_batched(record):
            return price
        return _round(price * self.batch_factor(record.model))

    def record_cost(self, record: Any) -> float | None:
        """Price a trace record (duck-typed on ``store.traces.TraceRecord``'s fields)."""
        request = record.request if isinstance(record.request, Mapping) else {}
        return self.for_row(record, self._sync_cost(record, request))

    def _sync_cost(self, record: Any, request: Mapping[str, Any]) -> float | None:
        return self.call_cost(
            model=record.model, operation=record.operation, input_tokens=record.input_tokens,
            output_tokens=record.output_tokens, images=record.images,
            size=_text_or_none(request.get("size")), quality=_text_or_none(request.get("quality")),
            cache_hit=record.cache_hit, status=record.status,
        )

    def _per_image(self, model: str, price: ModelPrice, size: str | None, quality: str | None) -> float | None:
        if not price.image:
            self._warn_once(f"noimage:{model}", f"model {model!r} has no per-image prices; image cost unknown")
            return None
        wanted_quality = price.default_quality if quality in _AUTO else quality
        by_size = price.image.get(wanted_quality or "")
        if by_size is None:
            # An unlisted quality word: price it at the default rather than guess a cheaper one.
            self._warn_once(f"quality:{model}:{quality}",
                            f"no {quality!r} quality price for {model!r}; using {price.default_quality!r}")
            by_size = price.image.get(price.default_quality or "") or next(iter(price.image.values()))
        wanted_size = price.default_size if size in _AUTO else size
        if wanted_size in by_size:
            return by_size[wanted_size or ""]
        # An unlisted size (a local server's 64x64, say): charge the most expensive listed size, so a
        # budget cap errs on the safe side.
        fallback = max(by_size.values())
        self._warn_once(f"size:{model}:{size}", f"no {size!r} size price for {model!r}; using ${fallback}")
        return fallback

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            LOG.warning("cost: %s", message)


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read a price file (default: the packaged ``agent/prices.toml``)."""
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PricesError(f"--prices {path}: no such file (give a TOML price table; see agent/prices.toml)") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PricesError(f"--prices {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PricesError(f"--prices {path}: not valid TOML ({exc}); see agent/prices.toml for the format") \
            from None
    return parse_prices(doc, str(path))


def parse_prices(doc: Mapping[str, Any], where: str) -> PriceTable:
    """Validate a parsed price document (pure); ``where`` names the file in error messages."""
    models = doc.get("models")
    if not isinstance(models, Mapping) or not models:
        raise PricesError(f"{where}: needs a [models.\"NAME\"] table per model (see agent/prices.toml)")
    parsed = {name: _parse_model(entry, f"{where}: models.{name}") for name, entry in models.items()}
    meta = doc.get("meta")
    as_of = meta.get("as_of", "") if isinstance(meta, Mapping) else ""
    return PriceTable(models=parsed, source=where, as_of=str(as_of))


def _parse_model(entry: Any, where: str) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise PricesError(f"{where}: must be a table of prices")
    unknown = sorted(set(entry) - _MODEL_KEYS)
    if unknown:
        raise PricesError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_MODEL_KEYS))}")
    image_doc = entry.get("image", {})
    if not isinstance(image_doc, Mapping):
        raise PricesError(f"{where}.image: must be tables [image.<quality>] of \"WxH\" = USD")
    image = {
        str(quality): {str(size): _price(value, f"{where}.image.{quality}.{size}") for size, value in sizes.items()}
        for quality, sizes in image_doc.items()
        if _is_table(sizes, f"{where}.image.{quality}")
    }
    return ModelPrice(
        input_per_1m=_optional_price(entry.get("input_per_1m"), f"{where}.input_per_1m"),
        output_per_1m=_optional_price(entry.get("output_per_1m"), f"{where}.output_per_1m"),
        image_output_per_1m=_optional_price(entry.get("image_output_per_1m"), f"{where}.image_output_per_1m"),
        image=image,
        default_size=_text_or_none(entry.get("default_size")),
        default_quality=_text_or_none(entry.get("default_quality")),
        batch_factor=_factor(entry.get("batch_factor", DEFAULT_BATCH_FACTOR), f"{where}.batch_factor"),
    )


def _factor(value: Any, where: str) -> float:
    share = _price(value, where)
    if share > 1:
        raise PricesError(f"{where}: must be a share of the synchronous price from 0 to 1, got {value!r}")
    return share


def is_batched(record: Any) -> bool:
    """Whether a trace row's call went through the Batch API (its ``meta`` says so)."""
    meta = getattr(record, "meta", None)
    return isinstance(meta, Mapping) and meta.get("transport") == "batch"


def _is_table(value: Any, where: str) -> bool:
    if not isinstance(value, Mapping):
        raise PricesError(f"{where}: must be a table of \"WxH\" = USD per image")
    return True


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PricesError(f"{where}: must be a number >= 0 (US dollars), got {value!r}")
    return float(value)


def _optional_price(value: Any, where: str) -> float | None:
    return None if value is None else _price(value, where)


def _tokens(count: int | None, per_1m: float | None) -> float:
    return (count or 0) * (per_1m or 0.0) / 1_000_000


def _round(value: float) -> float:
    # Micro-dollar precision: enough for one call, and keeps sums free of float noise in reports.
    return round(value, 8)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
