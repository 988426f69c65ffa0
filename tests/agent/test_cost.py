"""Cost accounting: the packaged price table, call pricing, fallbacks, warnings once, bad files."""

from __future__ import annotations

import logging

import pytest

from agent.readout.cost import DEFAULT_PRICES, PricesError, load_prices, parse_prices
from store.traces import TraceRecord


def test_packaged_table_prices_the_default_models() -> None:
    table = load_prices()
    assert table.source == str(DEFAULT_PRICES) and table.as_of
    # gpt-4o: $2.50 in / $10 out per 1M tokens.
    assert table.chat_cost("gpt-4o", input_tokens=2_000, output_tokens=100) == pytest.approx(0.006)
    assert table.chat_cost("gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000) == pytest.approx(0.75)
    # gpt-image-1 at medium 1024x1024 is 1056 image tokens at $40 per 1M ($0.042 rounded); prompt tokens at $5.
    assert table.image_cost("gpt-image-1", images=2, size="1024x1024", quality="medium") == pytest.approx(0.08448)
    assert table.image_cost("gpt-image-1", images=1, size="1024x1536", quality="high",
                            input_tokens=200) == pytest.approx(0.2496 + 0.001)


def test_reported_image_usage_is_what_is_billed() -> None:
    """gpt-image-1 reports its image tokens: the cost comes from them (a "high" image billed as high even
    when the request said nothing), not from the per-image price of what was asked."""
    table = load_prices()
    assert table.image_cost("gpt-image-1", images=1, output_tokens=4160, input_tokens=20) == pytest.approx(
        4160 * 40 / 1e6 + 20 * 5 / 1e6)
    # Without usage (another server), the list price of the size and quality asked for.
    assert table.image_cost("gpt-image-1", images=1, quality="low") == pytest.approx(0.01088)


def test_auto_and_missing_size_quality_use_the_model_defaults() -> None:
    table = load_prices()
    default = table.image_cost("gpt-image-1", images=1)
    assert default == table.image_cost("gpt-image-1", images=1, size="auto", quality="auto") == 0.04224


def test_unlisted_size_charges_the_dearest_size_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    table = load_prices()
    with caplog.at_level(logging.WARNING, logger="agent.readout.cost"):
        costs = [table.image_cost("dall-e-3", images=1, size="64x64", quality="hd") for _ in range(5)]
    assert costs == [0.12] * 5
    assert len([r for r in caplog.records if "64x64" in r.getMessage()]) == 1


def test_unknown_model_is_none_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    table = load_prices()
    with caplog.at_level(logging.WARNING, logger="agent.readout.cost"):
        results = [table.chat_cost("my-local-llama", input_tokens=10, output_tokens=10) for _ in range(3)]
        results.append(table.image_cost("my-local-sd", images=1))
    assert results == [None, None, None, None]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("my-local-llama" in m for m in messages) == 1
    assert sum("my-local-sd" in m for m in messages) == 1


def test_dated_snapshot_falls_back_to_base_name() -> None:
    table = load_prices()
    assert table.chat_cost("gpt-4o-2024-08-06", input_tokens=1000, output_tokens=0) == \
        table.chat_cost("gpt-4o", input_tokens=1000, output_tokens=0)


def _record(**kw: object) -> TraceRecord:
    base: dict[str, object] = {"run_id": "r", "class_name": "fox", "node": "render", "role": "t2i",
                               "operation": "image_generation", "model": "gpt-image-1",
                               "request": {"prompt": "x", "size": "1536x1024", "quality": "low"}, "images": 1}
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


def test_record_cost_reads_request_and_bills_nothing_for_hits_and_errors() -> None:
    table = load_prices()
    assert table.record_cost(_record()) == 0.016
    assert table.record_cost(_record(cache_hit=True)) == 0.0
    assert table.record_cost(_record(status="error", images=0, error="boom")) == 0.0
    chat = _record(node="extend", role="llm", operation="chat", model="gpt-4o-mini", request={"messages": []},
                   images=0, input_tokens=400, output_tokens=200)
    assert chat.cost_usd is None
    assert table.record_cost(chat) == pytest.approx((400 * 0.15 + 200 * 0.60) / 1e6)


def test_user_table_overrides_the_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.toml"
    path.write_text('[models."local"]\ninput_per_1m = 1.0\noutput_per_1m = 1.0\n', encoding="utf-8")
    table = load_prices(path)
    assert table.chat_cost("local", input_tokens=500_000, output_tokens=500_000) == 1.0
    assert table.chat_cost("gpt-4o", input_tokens=1, output_tokens=1) is None  # replaced, not merged


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("models = 3", "[models."),
        ('[models."m"]\ninput_per_1m = -1\n', "models.m.input_per_1m: must be a number >= 0"),
        ('[models."m"]\nprice = 1\n', "unknown key(s) price"),
        ('[models."m".image.low]\n"1x1" = "cheap"\n', "models.m.image.low.1x1"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_bad_price_files_fail_with_one_line(tmp_path, text: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PricesError) as info:
        load_prices(path)
    message = str(info.value)
    assert needle in message and "\n" not in message and str(path) in message


def test_missing_file_names_the_flag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PricesError, match="--prices .*no such file"):
        load_prices(tmp_path / "nope.toml")


def test_parse_prices_is_pure_and_rejects_empty() -> None:
    with pytest.raises(PricesError):
        parse_prices({}, "x.toml")
