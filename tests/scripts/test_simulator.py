"""The OpenAI-compatible simulator: shapes (through the real openai SDK), template content, determinism,
every fault kind, the inject queue, the rpm limit, exact stats, concurrency, the request log and the CLI.

No network: everything talks to 127.0.0.1. Requests are built by rendering the real prompts/*.txt files.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

import prompts
from scripts.sim import content as sim_content
from scripts.sim.chat import estimate_tokens, truncate
from scripts.sim.server import FAULT_KINDS, SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
CLASS = "tench, Tinca tinca (Ø fish)"  # commas, spaces, parentheses, non-ASCII: must come out whole
T1 = re.compile(r"^A photo of the class (?P<y>.+), with (?P<f>.+) in (?P<s>.+)\.$")
T2 = re.compile(r"^A photo of the class (?P<y>.+) with (?P<f>.+)\.$")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig()) as s:
        yield s




def png_bytes(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buf, format="PNG")
    return buf.getvalue()


def user(text: str, images: tuple[bytes, ...] = ()) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for data in images:
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        parts.append({"type": "image_url", "image_url": {"url": uri}})
    return [{"role": "user", "content": parts}]


def items_of(text: str) -> list[str]:
    lines = text.splitlines()
    assert all(re.match(rf"^{i}\. ", line) for i, line in enumerate(lines, start=1)), text
    return [line.split(". ", 1)[1] for line in lines]


def answer(name: str, images: tuple[bytes, ...] = (), seed: int = 0, salt: str = "s", **values: Any) -> str:
    kind, text = sim_content.chat_answer(prompts.render(name, class_name=CLASS, **values), images,
                                         seed=seed, salt=salt)
    assert kind == name.split("_")[1]
    return text


def raw(sim: Simulator, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


CHAT = {"model": "sim-chat", "messages": [{"role": "user", "content": "hello"}]}


# --- content: each prompt kind follows its template ------------------------------------------------------


@pytest.mark.parametrize("name", ["tench, Tinca tinca", "St. Bernard", "Ångström (unit), v2.", "x"])
@pytest.mark.parametrize("prompt", prompts.PROMPT_NAMES)
def test_kind_and_class_name_come_from_the_rendered_prompt(prompt: str, name: str) -> None:
    text = prompts.render(prompt, class_name=name, descriptions=["A photo of the class q, with a in b."],
                          count=3, description=f"A photo of the class {name}, with a in b.")
    kind = sim_content.classify(text)
    assert kind == prompt.split("_")[1]
    assert sim_content.class_name_of(text, kind) == name


def test_describe_follows_template1_and_depends_on_the_image() -> None:
    red, blue = answer("prompt1_describe", (png_bytes((210, 30, 30)),)), answer(
        "prompt1_describe", (png_bytes((30, 50, 210)),))
    for text, colour in ((red, "red"), (blue, "blue")):
        m = T1.match(text)
        assert m and m.group("y") == CLASS and colour in m.group("f"), text
    assert red != blue


def test_reminder_answers_a_template1_sentence() -> None:
    m = T1.match(answer("prompt1_reminder"))
    assert m and m.group("y") == CLASS


def test_extend_lists_count_template_items_with_some_repeats_and_progress() -> None:
    existing = [sim_content.sentence1(CLASS, "a red fin", "a pond")]
    listed: list[str] = []
    for call in range(3):
        got = items_of(answer("prompt2_extend", descriptions=existing, count=40, salt=f"call{call}"))
        assert len(got) == 40 and all(T1.match(" ".join(g.split())) for g in got)
        keys = [sim_content.normalise(g) for g in got]
        seen = {sim_content.normalise(e) for e in existing}
        repeats = sum(1 for i, k in enumerate(keys) if k in seen or k in keys[:i])
        assert 1 <= repeats <= 14, repeats  # ~15 % of 40 on purpose
        new = [g for g, k in zip(got, keys, strict=True) if k not in seen]
        assert len(set(map(sim_content.normalise, new))) >= 26  # progress on every call
        existing = [*existing, *sim_content.dedupe_items(new)]
        listed = got
    assert len(existing) >= 1 + 3 * 26 and listed


def test_extend_caps_at_40_and_honours_small_counts() -> None:
    assert len(items_of(answer("prompt2_extend", descriptions=[], count=100))) == 40
    assert len(items_of(answer("prompt2_extend", descriptions=[], count=3))) == 3


def test_dedupe_removes_exact_and_near_repeats_and_copies_exactly() -> None:
    a, b = sim_content.sentence1(CLASS, "a red fin", "a pond"), sim_content.sentence1(CLASS, "gold scales", "a lake")
    near_a = a.replace(" with ", " with  ").upper()
    got = items_of(answer("prompt3_dedupe", descriptions=[a, b, a, near_a, b]))
    assert got == [a, b]


def test_dedupe_invent_adds_one_new_item() -> None:
    items = [sim_content.sentence1(CLASS, "a red fin", "a pond")]
    with Simulator(SimConfig(dedupe_invent=True)) as s:
        body = {"model": "m", "messages": user(prompts.render("prompt3_dedupe", class_name=CLASS,
                                                               descriptions=items))}
        _, _, data = raw(s, "POST", "/v1/chat/completions", body)
    got = items_of(json.loads(data)["choices"][0]["message"]["content"])
    assert got[:1] == items and len(got) == 2 and T1.match(got[1]) and got[1] not in items


def test_summarize_is_template2_naming_the_most_common_features() -> None:
    items = [sim_content.sentence1(CLASS, f, s) for f, s in
             [("gold scales", "a lake"), ("gold scales", "a pond"), ("a red fin", "a pond")]]
    m = T2.match(answer("prompt4_summarize", descriptions=items))
    assert m and m.group("y") == CLASS and m.group("f").startswith("gold scales, a red fin and ")


def test_refine_keeps_scene_adds_a_feature_and_follows_template1() -> None:
    original = sim_content.sentence1(CLASS, 'a "red" fin', "a shallow pond")
    refined = answer("prompt5_refine", description=original)
    m = T1.match(refined)
    assert m and m.group("y") == CLASS and m.group("s") == "a shallow pond"
    assert 'a "red" fin' in m.group("f") and refined != original
    again = answer("prompt5_refine", description=refined)
    assert T1.match(again) and again.count(" and ") <= 2  # bounded growth across rounds


def test_unknown_prompt_is_not_template_text() -> None:
    kind, text = sim_content.chat_answer("What is the weather?", (), seed=0, salt="x")
    assert kind == "other" and not text.startswith("A photo of the class")


def test_content_is_deterministic_in_request_and_seed() -> None:
    base = dict(descriptions=["x"], count=20)
    assert answer("prompt2_extend", seed=1, **base) == answer("prompt2_extend", seed=1, **base)
    assert answer("prompt2_extend", seed=1, **base) != answer("prompt2_extend", seed=2, **base)
    assert sim_content.png_image("p", side=8) == sim_content.png_image("p", side=8)
    assert sim_content.png_image("p", side=8) != sim_content.png_image("q", side=8)


def test_token_estimate_and_truncation() -> None:
    assert estimate_tokens("a b c") == 4
    text, finish = truncate("one two three four five six", 4)
    assert (text, finish) == ("one two three", "length") and estimate_tokens(text) <= 4
    assert truncate("one two", 10) == ("one two", "stop")


# --- shapes through the real SDK --------------------------------------------------------------------------


async def test_chat_shape_and_same_request_same_answer(client: AsyncOpenAI, sim: Simulator) -> None:
    msgs = user(prompts.render("prompt1_describe", class_name=CLASS), (png_bytes((20, 150, 60)),))
    first = await client.chat.completions.create(model="gpt-x", messages=msgs)  # type: ignore[arg-type]
    second = await client.chat.completions.create(model="gpt-x", messages=msgs)  # type: ignore[arg-type]
    assert first.object == "chat.completion" and first.model == "gpt-x" and first.id.startswith("chatcmpl-")
    assert first.choices[0].finish_reason == "stop" and first.created > 0
    text = first.choices[0].message.content or ""
    assert T1.match(text) and "green" in text and second.choices[0].message.content == text
    assert first.usage is not None
    assert first.usage.completion_tokens == estimate_tokens(text)
    assert first.usage.prompt_tokens == estimate_tokens(msgs[0]["content"][0]["text"]) + 85
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert sim.stats()["by_kind"] == {"describe": 2}


async def test_max_tokens_truncates_with_finish_reason_length(client: AsyncOpenAI) -> None:
    msgs = user(prompts.render("prompt2_extend", class_name=CLASS, descriptions=[], count=10))
    r = await client.chat.completions.create(model="m", messages=msgs, max_tokens=30)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens <= 30


async def test_images_b64_shape_n_and_side(client: AsyncOpenAI, sim: Simulator) -> None:
    r = await client.images.generate(model="sim-image", prompt="A photo of the class x, with y in z.", n=2)
    assert r.created > 0 and r.data and len(r.data) == 2 and r.usage and r.usage.input_tokens > 0
    pngs = [base64.b64decode(d.b64_json or "") for d in r.data]
    assert all(Image.open(io.BytesIO(p)).size == (32, 32) for p in pngs) and pngs[0] != pngs[1]
    sim.set_config(image_side=12)
    again = await client.images.generate(model="sim-image", prompt="other")
    assert again.data and Image.open(io.BytesIO(base64.b64decode(again.data[0].b64_json or ""))).size == (12, 12)
    assert sim.stats()["images_generated"] == 3


async def test_images_url_is_served_by_the_simulator(client: AsyncOpenAI, sim: Simulator) -> None:
    r = await client.images.generate(model="dall-e-3", prompt="a fish", response_format="url")
    assert r.data and (url := r.data[0].url) and url.startswith(sim.url + "/sim/files/")
    status, headers, data = raw(sim, "GET", url[len(sim.url):])
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(data)).size == (32, 32)
    assert raw(sim, "GET", "/sim/files/" + "0" * 32 + ".png")[0] == 404
    assert sim.stats()["requests"]["files"] == 2 and sim.stats()["total"] == 1


async def test_models_list(client: AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == ["sim-chat", "sim-vision", "sim-image"]
    assert all(m.object == "model" for m in page.data)


def test_bad_requests_get_openai_shaped_errors(sim: Simulator) -> None:
    status, _, data = raw(sim, "POST", "/v1/chat/completions", {"model": "m", "messages": []})
    assert status == 400 and "messages" in json.loads(data)["error"]["message"]
    assert raw(sim, "POST", "/v1/images/generations", {"prompt": "x", "n": 99})[0] == 400
    assert raw(sim, "GET", "/v1/nothing")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=b"{not json", headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 400
    conn.close()


def test_require_key(sim: Simulator) -> None:
    sim.set_config(require_key=True)
    status, _, data = raw(sim, "POST", "/v1/chat/completions", CHAT)
    assert status == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
    assert raw(sim, "POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer k"})[0] == 200


# --- faults -----------------------------------------------------------------------------------------------


async def _chat(client: AsyncOpenAI, text: str = "hello") -> str:
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content or ""


async def test_429_carries_retry_after_headers(client: AsyncOpenAI, sim: Simulator) -> None:
    sim.set_config(retry_after_s=0.25)
    sim.inject("429")
    with pytest.raises(openai.RateLimitError) as err:
        await _chat(client)
    headers = err.value.response.headers
    assert headers["retry-after"] == "0.25" and headers["retry-after-ms"] == "250"
    assert await _chat(client)  # the queue held one fault only


@pytest.mark.parametrize(("kind", "error"), [
    ("500", openai.InternalServerError), ("503", openai.InternalServerError),
    ("reset", openai.APIConnectionError), ("malformed_json", json.JSONDecodeError),
])
async def test_error_faults_reach_the_client(client: AsyncOpenAI, sim: Simulator, kind: str,
                                             error: type[Exception]) -> None:
    sim.inject(kind, endpoint="chat")
    with pytest.raises(error) as err:
        await _chat(client)
    if kind == "reset":
        assert not isinstance(err.value, openai.APITimeoutError)
    if kind in ("500", "503"):
        assert err.value.status_code == int(kind)  # type: ignore[attr-defined]
    assert sim.stats()["faults"] == {kind: 1}


async def test_hang_outlasts_the_client_timeout(sim: Simulator) -> None:
    sim.set_config(hang_s=20)
    sim.inject("hang")
    async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0, timeout=0.3) as short:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await _chat(short)
        assert 0.3 <= time.monotonic() - started < 5


async def test_nontemplate_bad_image_and_refusal(client: AsyncOpenAI, sim: Simulator) -> None:
    describe = prompts.render("prompt1_describe", class_name=CLASS)
    sim.inject("nontemplate")
    assert not (await _chat(client, describe)).startswith("A photo of the class")
    assert T1.match(await _chat(client, describe))
    sim.inject("bad_image")
    r = await client.images.generate(model="i", prompt="p")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or "")))  # type: ignore[index]
    sim.inject("refusal")
    with pytest.raises(openai.BadRequestError) as err:
        await client.images.generate(model="i", prompt="p")
    assert err.value.code == "content_policy_violation" and err.value.status_code == 400
    assert sim.stats()["faults"] == {"bad_image": 1, "nontemplate": 1, "refusal": 1}


def test_inject_queue_is_exact_and_endpoint_scoped(sim: Simulator) -> None:
    sim.inject("500", count=2, endpoint="images")
    sim.inject("refusal")  # images only, queued behind the 500s
    image = {"model": "i", "prompt": "p"}
    assert raw(sim, "POST", "/v1/chat/completions", CHAT)[0] == 200  # chat is not a target
    assert [raw(sim, "POST", "/v1/images/generations", image)[0] for _ in range(4)] == [500, 500, 400, 200]
    assert sim.stats()["faults"] == {"500": 2, "refusal": 1}
    with pytest.raises(ValueError, match="cannot happen on endpoint"):
        sim.inject("refusal", endpoint="chat")
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("teapot")


def test_random_fault_rates_are_seeded_and_observed() -> None:
    def run(seed: int) -> list[int]:
        with Simulator(SimConfig(rate_500=0.3, rate_503=0.2, seed=seed)) as s:
            return [raw(s, "POST", "/v1/chat/completions", CHAT)[0] for _ in range(60)]

    first = run(7)
    assert first == run(7) and first != run(8)
    assert 6 <= first.count(500) <= 30 and 3 <= first.count(503) <= 24 and first.count(200) >= 15


def test_every_rate_knob_is_a_fault_kind() -> None:
    with Simulator(SimConfig(rate_hang=1.0, hang_s=0)) as s:  # hang_s=0: the drop is immediate
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            raw(s, "POST", "/v1/chat/completions", CHAT)
        assert s.stats()["faults"] == {"hang": 1}
    for kind in FAULT_KINDS:
        assert hasattr(SimConfig(), f"rate_{kind}")
    with pytest.raises(ValueError, match="sum to"):
        SimConfig(rate_500=0.7, rate_429=0.7).validate()


def test_rpm_limit_answers_429_in_a_sliding_window(sim: Simulator) -> None:
    sim.set_config(rpm_limit=3)
    statuses = [raw(sim, "POST", "/v1/chat/completions", CHAT) for _ in range(5)]
    assert [s for s, _, _ in statuses] == [200, 200, 200, 429, 429]
    assert 55 <= float(statuses[3][1]["retry-after"]) <= 60
    assert raw(sim, "GET", "/v1/models")[0] == 200  # listing models is not rate limited
    assert sim.stats()["faults"] == {"rpm_429": 2}


# --- stats, log, concurrency, latency -------------------------------------------------------------------


def test_stats_count_exactly_and_reset(sim: Simulator) -> None:
    describe = {"model": "m", "messages": user(prompts.render("prompt1_describe", class_name=CLASS))}
    for _ in range(3):
        raw(sim, "POST", "/v1/chat/completions", describe)
    raw(sim, "POST", "/v1/chat/completions", CHAT)
    raw(sim, "POST", "/v1/images/generations", {"model": "i", "prompt": "p", "n": 2})
    raw(sim, "GET", "/v1/models")
    _, _, body = raw(sim, "GET", "/sim/stats")
    stats = json.loads(body)
    assert stats["requests"] == {"chat": 4, "images": 1, "models": 1, "files": 0} and stats["total"] == 6
    assert stats["by_kind"] == {"describe": 3, "image": 1, "other": 1} and stats["images_generated"] == 2
    assert stats["max_in_flight"] == 1 and stats["in_flight"] == 0 and stats["faults"] == {}
    assert json.loads(raw(sim, "POST", "/sim/reset")[2])["total"] == 0
    assert sim.stats()["requests"]["chat"] == 0


def test_request_log_has_one_line_per_request_and_no_key(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    with Simulator(SimConfig(log_path=str(log))) as s:
        s.inject("503")
        for _ in range(2):
            raw(s, "POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-secret-123"})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["endpoint"], e["status"], e["fault"], e["model"]) for e in lines] == [
        ("chat", 503, "503", "sim-chat"), ("chat", 200, None, "sim-chat")]
    assert all(e["kind"] == "other" and e["time"] > 0 for e in lines)
    assert "sk-secret" not in log.read_text() and "Bearer" not in log.read_text()


async def _keepalive_client(port: int, requests: int) -> list[int]:
    """One TCP connection sending ``requests`` chat requests in turn (HTTP/1.1 keep-alive); the statuses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(CHAT).encode()
    statuses = []
    for _ in range(requests):
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        statuses.append(int(head.split()[1]))
        length = int(re.search(r"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
    writer.close()
    return statuses


async def test_256_concurrent_keepalive_connections_overlap(sim: Simulator) -> None:
    # A raw asyncio client keeps the client's own CPU out of the measurement (the SDK costs ms per call
    # on this 2-core box); the SDK's concurrency is exercised by the providers' tests.
    # 1 s per request: long enough that 256 clients connecting on a loaded 2-core box still overlap.
    sim.set_config(latency_ms=1000)
    started = time.monotonic()
    results = await asyncio.gather(*(_keepalive_client(sim.port, 2) for _ in range(256)))
    wall = time.monotonic() - started
    assert [s for r in results for s in r] == [200] * 512
    assert wall < 512 * 1.0 / 16  # serial: 512 s
    stats = sim.stats()
    assert stats["requests"]["chat"] == 512 and stats["max_in_flight"] >= 128 and stats["in_flight"] == 0


async def test_sdk_requests_run_concurrently(client: AsyncOpenAI, sim: Simulator) -> None:
    sim.set_config(latency_ms=200)
    started = time.monotonic()
    texts = await asyncio.gather(*(_chat(client, f"q{i}") for i in range(32)))
    assert all(texts) and time.monotonic() - started < 32 * 0.2 / 2
    assert sim.stats()["max_in_flight"] >= 8


def test_latency_fixed_and_lognormal(sim: Simulator) -> None:
    def timed() -> float:
        t = time.monotonic()
        raw(sim, "POST", "/v1/chat/completions", CHAT)
        return time.monotonic() - t

    sim.set_config(latency_ms=40)
    assert timed() >= 0.04
    sim.set_config(latency_dist="lognormal", latency_sigma=1.0, latency_ms=20)
    spread = [timed() for _ in range(8)]
    assert max(spread) - min(spread) > 0.005
    with pytest.raises(ValueError, match="latency_dist"):
        sim.set_config(latency_dist="uniform")
    with pytest.raises(ValueError, match="unknown simulator knob"):
        sim.set_config(latency=1)


def test_config_over_http(sim: Simulator) -> None:
    status, _, body = raw(sim, "POST", "/sim/config", {"rate_500": 1.0})
    assert status == 200 and json.loads(body)["config"]["rate_500"] == 1.0
    assert raw(sim, "POST", "/v1/chat/completions", CHAT)[0] == 500
    assert raw(sim, "POST", "/sim/config", {"rate_500": 2})[0] == 400


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_prints_its_url_and_serves() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "scripts.simulator", "--port", "0", "--rate-429", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        m = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)/v1", line)
        assert m, line
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_cli_bad_flag_is_one_error_line() -> None:
    done = subprocess.run([sys.executable, "-m", "scripts.simulator", "--rate-500", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "rate_500" in done.stderr and "Traceback" not in done.stderr
