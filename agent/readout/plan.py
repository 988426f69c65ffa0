"""The ``--dry-run`` planner: calls, tokens and cost a run will take, per class, without calling any model.

Contract:

- :func:`plan_class` is pure: from M_y, the settings (K, R, ``--max-describe``, ``--max-extend-rounds``,
  dedupe passes), the prompts' fixed lengths and a price table it returns a :class:`ClassPlan` whose
  every number is a ``[low, high]`` :class:`Span`.
- The bounds follow the graph's own loop limits (agent/graph/*), so a run that goes as planned lands inside
  them: ``low`` = every step succeeds first time (each describe reply follows Template 1, one extend round
  fills the list, one dedupe pass, no refinement); ``high`` = every bounded loop runs to its limit (each
  describe re-asked, ``max_extend_rounds`` extend rounds in each of ``max_dedupe_passes`` dedupe passes,
  every image refined and re-rendered R times). A run with failed calls can fall below ``low``.
- Tokens are estimated at 4 characters per token (OpenAI's rule of thumb for English), a Template 1
  description at 12-40 tokens, C_y at 30-100, and an input image at 85 (``detail: low``) to 765 tokens
  (a 768-px image at ``detail: high/auto``, the providers' default downscale).
- Cost side by side: ``cost_usd`` with every call synchronous, ``batch_cost_usd`` with every call through the
  Batch API (each model's ``batch_factor`` of the price, agent/readout/cost.py), and ``run_cost_usd`` as this run is
  set up (the roles in ``batched`` at the batch price, the others synchronous).
- :func:`render_plan` prints a rich table; :func:`plan_json` gives the same numbers for ``--json``.
- A class with M_y >= K plans zero calls (the graph generates nothing for it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import prompts
from agent.graph.constants import ask_count
from agent.lifecycle.settings import GraphSettings
from agent.providers.config import NO_RATE_LIMIT, ROLES
from agent.readout.cost import PriceTable

__all__ = ["ClassPlan", "RunPlan", "Span", "expected_by_stage", "plan_class", "plan_json", "plan_run",
           "prompt_overheads", "render_plan"]

CHARS_PER_TOKEN = 4
DESC_TOKENS = (12, 40)  # one Template 1 sentence
TEMPLATE_TOKENS = (30, 100)  # C_y: "under 60 words" per Prompt 4
IMAGE_TOKENS = (85, 765)  # OpenAI vision: detail low / a 768-px image at detail high


@dataclass(frozen=True)
class Span:
    """A ``[low, high]`` range that adds and scales: ``Span(1, 2) + Span(3, 4) -> Span(4, 6)``."""

    low: float
    high: float

    def __add__(self, other: Span) -> Span:
        return Span(self.low + other.low, self.high + other.high)

    def times(self, other: Span) -> Span:
        return Span(self.low * other.low, self.high * other.high)

    def text(self, fmt: str = "{:,.0f}") -> str:
        low, high = fmt.format(self.low), fmt.format(self.high)
        return low if low == high else f"{low} – {high}"


ZERO = Span(0, 0)


@dataclass(frozen=True)
class ClassPlan:
    class_name: str
    m_y: int
    n_y: int
    calls: dict[str, Span]  # by role: lmm / llm / t2i
    input_tokens: Span
    output_tokens: Span
    cost_usd: Span | None  # None when a role's model has no price; every call synchronous
    batch_cost_usd: Span | None = None  # every call through the Batch API
    run_cost_usd: Span | None = None  # as the run is set up: its batched roles at the batch price

    @property
    def total_calls(self) -> Span:
        return sum(self.calls.values(), ZERO)


@dataclass(frozen=True)
class RunPlan:
    classes: list[ClassPlan]
    settings: GraphSettings
    models: dict[str, str] = field(default_factory=dict)
    unbilled: frozenset[str] = frozenset()  # roles on local endpoints: $0
    limits: dict[str, tuple[float, int]] = field(default_factory=dict)  # role -> (per_minute, max_in_flight)
    batched: tuple[str, ...] = ()  # roles sent through the Batch API

    def total(self, what: str) -> Span | None:
        """Sum over classes of ``calls``, ``input_tokens``, ``output_tokens`` or a ``*cost_usd``."""
        spans = [getattr(c, what) if what != "calls" else c.total_calls for c in self.classes]
        if any(s is None for s in spans):
            return None
        return sum(spans, ZERO)

    def role_calls(self, role: str) -> Span:
        return sum((c.calls[role] for c in self.classes), ZERO)


def prompt_overheads(class_name: str) -> dict[str, int]:
    """Tokens of each prompt's fixed text (with an empty list and an empty description)."""
    texts = {
        "describe": prompts.render("prompt1_describe", class_name=class_name),
        "reminder": prompts.render("prompt1_reminder", class_name=class_name),
        "extend": prompts.render("prompt2_extend", class_name=class_name, descriptions=[], count=0),
        "dedupe": prompts.render("prompt3_dedupe", class_name=class_name, descriptions=[]),
        "summarize": prompts.render("prompt4_summarize", class_name=class_name, descriptions=[]),
        "refine": prompts.render("prompt5_refine", class_name=class_name, description=""),
    }
    return {name: math.ceil(len(text) / CHARS_PER_TOKEN) for name, text in texts.items()}


def plan_run(classes: Sequence[tuple[str, int]], settings: GraphSettings, models: Mapping[str, str],
             prices: PriceTable | None, image: Mapping[str, str | None] | None = None,
             unbilled: frozenset[str] = frozenset(), batched: Sequence[str] = ()) -> RunPlan:
    """Plan every ``(class_name, M_y)``; ``models`` maps role -> model name; ``image`` has size/quality;
    ``unbilled`` roles (local endpoints) cost $0; ``batched`` names the roles sent through the Batch API."""
    plans = [plan_class(name, m_y, settings, models, prices, prompt_overheads(name), image or {}, unbilled, batched)
             for name, m_y in classes]
    return RunPlan(plans, settings, dict(models), unbilled, batched=tuple(batched))


def plan_class(name: str, m_y: int, s: GraphSettings, models: Mapping[str, str], prices: PriceTable | None,
               overhead: Mapping[str, int], image: Mapping[str, str | None],
               unbilled: frozenset[str] = frozenset(), batched: Sequence[str] = ()) -> ClassPlan:
    """One class's plan (pure); see the module docstring for what low and high mean."""
    n_y = max(0, s.target_per_class - m_y)
    if n_y == 0:
        zero_cost = ZERO if prices is not None else None
        return ClassPlan(name, m_y, 0, {r: ZERO for r in ROLES}, ZERO, ZERO, zero_cost, zero_cost, zero_cost)
    steps = _steps(m_y, n_y, s, overhead)
    calls = {role: sum((st.calls for st in steps if st.role == role), ZERO) for role in ROLES}
    tokens_in = sum((st.calls.times(st.input_tokens) for st in steps), ZERO)
    tokens_out = sum((st.calls.times(st.output_tokens) for st in steps if st.role != "t2i"), ZERO)
    factor = {r: prices.batch_factor(models.get(r, "")) if prices is not None else 1.0 for r in ROLES}
    cost = _cost(steps, models, prices, image, unbilled, {})
    batch = _cost(steps, models, prices, image, unbilled, factor)
    run = _cost(steps, models, prices, image, unbilled, {r: f for r, f in factor.items() if r in batched})
    return ClassPlan(name, m_y, n_y, calls, tokens_in, tokens_out, cost, batch, run)


@dataclass(frozen=True)
class _Step:
    role: str
    calls: Span
    input_tokens: Span  # per call
    output_tokens: Span  # per call


def _steps(m_y: int, n_y: int, s: GraphSettings, oh: Mapping[str, int]) -> list[_Step]:
    described = m_y if s.max_describe is None else min(m_y, s.max_describe)
    k = m_y + n_y
    desc = Span(*DESC_TOKENS)
    # Describe: one vision call per image, each re-asked at most once (with the reminder appended).
    describe_in = Span(oh["describe"] + IMAGE_TOKENS[0], oh["describe"] + oh["reminder"] + IMAGE_TOKENS[1])
    # Extend rounds: the prompt carries the current list (M_y .. K items), the reply the missing ones.
    extend_rounds = extend_round_span(n_y, s)
    # Refinement: none at best; every image R times at worst (Prompt 5 + a re-render each round).
    refine = Span(0, n_y * s.max_rounds)
    return [
        _Step("lmm", Span(described, 2 * described), describe_in, desc),
        _Step("llm", extend_rounds, Span(oh["extend"] + m_y * DESC_TOKENS[0], oh["extend"] + k * DESC_TOKENS[1]),
              list_of(n_y)),
        _Step("llm", Span(1, s.max_dedupe_passes), Span(oh["dedupe"], oh["dedupe"]) + list_of(n_y), list_of(n_y)),
        _Step("llm", Span(1, 1), Span(oh["summarize"], oh["summarize"]) + list_of(k), Span(*TEMPLATE_TOKENS)),
        _Step("llm", refine, Span(oh["refine"], oh["refine"]) + desc, desc),
        _Step("t2i", Span(n_y, n_y) + refine, desc, ZERO),
    ]


def extend_round_span(n_y: int, s: GraphSettings) -> Span:
    """Extend rounds (Prompt 2 calls) one class takes: ``low`` = every reply gives all it is asked for (a
    round adds at most ``EXTEND_BATCH``); ``high`` = a weak model — half of each reply usable, and each
    extra dedupe pass refilling a fifth of the list — never more than the loop's own limits.

    >>> s = GraphSettings()  # the run's defaults: 50 rounds per pass, 3 passes
    >>> extend_round_span(20, s), extend_round_span(297, s)
    (Span(low=1, high=8), Span(low=6, high=25))
    """
    def rounds(missing: int, keep: float) -> int:
        count = 0
        while missing > 0 and count < s.max_extend_rounds:
            missing -= max(1, min(missing, int(ask_count(missing) * keep)))
            count += 1
        return count

    refill = math.ceil(n_y / 5)
    high = rounds(n_y, 0.5) + (s.max_dedupe_passes - 1) * rounds(refill, 0.5)
    return Span(rounds(n_y, 1.0), min(high, s.max_extend_rounds * s.max_dedupe_passes))


def list_of(count: int) -> Span:
    """Tokens of a list of ``count`` descriptions."""
    return Span(count * DESC_TOKENS[0], count * DESC_TOKENS[1])


def _cost(steps: Sequence[_Step], models: Mapping[str, str], prices: PriceTable | None,
          image: Mapping[str, str | None], unbilled: frozenset[str] = frozenset(),
          factor: Mapping[str, float] | None = None) -> Span | None:
    """The steps' cost; a role in ``factor`` pays that share of its price (the Batch API's)."""
    if prices is None:
        return None
    total = ZERO
    for st in steps:
        if st.role in unbilled:
            continue  # a local endpoint: nobody bills it
        model = models.get(st.role, "")
        if st.role == "t2i":
            one = [prices.image_cost(model, images=1, size=image.get("size"), quality=image.get("quality"),
                                     input_tokens=int(t)) for t in (st.input_tokens.low, st.input_tokens.high)]
        else:
            one = [prices.chat_cost(model, input_tokens=int(i), output_tokens=int(o))
                   for i, o in ((st.input_tokens.low, st.output_tokens.low),
                                (st.input_tokens.high, st.output_tokens.high))]
        if one[0] is None or one[1] is None:
            return None
        share = (factor or {}).get(st.role, 1.0)
        total = total + st.calls.times(Span(one[0] * share, one[1] * share))
    return total


# Typical server time of one request, used only for the in-flight bound on duration (a 768-px vision call,
# a list-writing text call, one gpt-image-1 render); the per-minute bound needs no assumption.
ASSUMED_LATENCY_S = {"lmm": 8.0, "llm": 8.0, "t2i": 20.0}


@dataclass(frozen=True)
class RoleTime:
    """How long a role's calls take at its limits: seconds as a span, and which limit sets it."""

    role: str
    calls: Span
    seconds: Span
    binding: str


def role_times(plan: RunPlan) -> list[RoleTime]:
    """Per role: calls x 60 / per_minute (rate limit) or calls x latency / max_in_flight (in-flight limit,
    with :data:`ASSUMED_LATENCY_S`), whichever is longer. Roles overlap across classes, so the run takes at
    least the slowest role's time."""
    out = []
    for role, (per_minute, in_flight) in plan.limits.items():
        if role in plan.batched:  # its time is the Batch API's (up to 24 h per step), not its limits'
            continue
        calls = plan.role_calls(role)
        rate = Span(calls.low * 60 / per_minute, calls.high * 60 / per_minute)
        wire = Span(calls.low * ASSUMED_LATENCY_S[role] / in_flight, calls.high * ASSUMED_LATENCY_S[role] / in_flight)
        if rate.high >= wire.high and per_minute < NO_RATE_LIMIT:
            binding = f"{per_minute:g}/min"
        else:
            binding = f"{in_flight} in flight, ~{ASSUMED_LATENCY_S[role]:g} s each"
        out.append(RoleTime(role, calls, Span(max(rate.low, wire.low), max(rate.high, wire.high)), binding))
    return out


def duration_text(seconds: Span) -> str:
    """``duration_text(Span(90, 172800)) -> '2 min – 48 h'``."""
    def one(value: float) -> str:
        if value < 3600:
            return f"{max(1, round(value / 60))} min"
        return f"{value / 3600:.1f} h".replace(".0 h", " h")
    low, high = one(seconds.low), one(seconds.high)
    return low if low == high else f"{low} – {high}"


def plan_json(plan: RunPlan) -> dict[str, Any]:
    """The plan as JSON-able data (spans as ``[low, high]``)."""
    def span(s: Span | None) -> list[float] | None:
        return None if s is None else [s.low, s.high]

    return {
        "settings": plan_settings_json(plan.settings), "models": plan.models,
        "classes": [
            {"class_name": c.class_name, "M_y": c.m_y, "N_y": c.n_y,
             "calls": {r: span(v) for r, v in c.calls.items()}, "total_calls": span(c.total_calls),
             "input_tokens": span(c.input_tokens), "output_tokens": span(c.output_tokens),
             "cost_usd": span(c.cost_usd), "batch_cost_usd": span(c.batch_cost_usd),
             "run_cost_usd": span(c.run_cost_usd)}
            for c in plan.classes
        ],
        "batched": list(plan.batched),
        "total": {"calls": span(plan.total("calls")), "input_tokens": span(plan.total("input_tokens")),
                  "output_tokens": span(plan.total("output_tokens")), "cost_usd": span(plan.total("cost_usd")),
                  "batch_cost_usd": span(plan.total("batch_cost_usd")),
                  "run_cost_usd": span(plan.total("run_cost_usd")),
                  **{f"{r}_calls": span(plan.role_calls(r)) for r in ROLES}},
        "time_s": {t.role: {"seconds": span(t.seconds), "binding": t.binding} for t in role_times(plan)},
        "not_billed": sorted(plan.unbilled),
    }


def plan_settings_json(s: GraphSettings) -> dict[str, Any]:
    """The settings a plan assumed, as ``--dry-run --log-json`` prints them (its ``k`` is K_y)."""
    return {"k": s.target_per_class, "max_rounds": s.max_rounds, "max_describe": s.max_describe,
            "max_extend_rounds": s.max_extend_rounds, "max_dedupe_passes": s.max_dedupe_passes}


def render_plan(plan: RunPlan, console: Any) -> None:
    """Print the plan as a rich table (one row per class plus a total row) on ``console``."""
    from rich.table import Table  # rich is only needed when printing

    table = Table(title=f"LTGC dry run: K={plan.settings.target_per_class}, R={plan.settings.max_rounds} — no model was called")
    for head in ("class", "M_y", "N_y", "vision calls", "text calls", "image calls", "tokens in",
                 "tokens out", "sync USD", "batch USD"):
        table.add_column(head, justify="left" if head == "class" else "right")

    def money(s: Span | None) -> str:
        if s is None:
            return "unknown (no price)"
        return "local, not billed" if plan.unbilled == set(ROLES) else s.text("${:,.2f}")

    for c in plan.classes:
        table.add_row(c.class_name, str(c.m_y), str(c.n_y), c.calls["lmm"].text(), c.calls["llm"].text(),
                      c.calls["t2i"].text(), c.input_tokens.text(), c.output_tokens.text(), money(c.cost_usd),
                      money(c.batch_cost_usd))
    table.add_section()
    total_in, total_out = plan.total("input_tokens"), plan.total("output_tokens")
    table.add_row("total", str(sum(c.m_y for c in plan.classes)), str(sum(c.n_y for c in plan.classes)),
                  plan.role_calls("lmm").text(), plan.role_calls("llm").text(), plan.role_calls("t2i").text(),
                  total_in.text() if total_in else "", total_out.text() if total_out else "",
                  money(plan.total("cost_usd")), money(plan.total("batch_cost_usd")))
    console.print(table)
    batched = ", ".join(plan.batched)
    console.print("cost: sync = every call synchronous; batch = every call through the OpenAI Batch API "
                  "(half price, results within 24 h). This run: "
                  + (f"{money(plan.total('run_cost_usd'))} with {batched} batched." if batched else
                     "all synchronous (--lmm-batch / --llm-batch / --t2i-batch batch a role)."), soft_wrap=True)
    calls = plan.total("calls") or ZERO
    console.print(f"calls: {calls.text()} (low = every step succeeds first time; high = a weak model: half of "
                  "each extend reply usable, two extra dedupe passes, every image refined R times, every "
                  "description re-asked). Models: " + ", ".join(f"{r}={m}" for r, m in plan.models.items()))
    if plan.unbilled:
        console.print(f"not billed (local endpoints): {', '.join(sorted(plan.unbilled))}")
    unlimited = sorted(r for r, (per_minute, _) in plan.limits.items() if per_minute >= NO_RATE_LIMIT)
    if unlimited:
        console.print(f"no per-minute limit (local, unbilled endpoints; in-flight limits hold): {', '.join(unlimited)}")
    times = role_times(plan)
    if times:
        slowest = max(times, key=lambda t: t.seconds.high)
        console.print(f"time at the role limits: at least {duration_text(slowest.seconds)}, set by {slowest.role} "
                      f"({slowest.calls.text()} calls at {slowest.binding}); "
                      + "; ".join(f"{t.role} {duration_text(t.seconds)} ({t.binding})" for t in times)
                      + ". Raise --<role>-per-minute / --<role>-max-in-flight to what your account allows.")


def expected_by_stage(plan: RunPlan) -> dict[str, int]:
    """Calls (images for ``evaluate``) each progress stage should reach if all goes as planned (low bound).

    ``refine`` is left out: how many images score low cannot be told before the run.
    """
    n_y = sum(c.n_y for c in plan.classes)
    return {
        "describe": int(plan.role_calls("lmm").low),
        "extend": int(sum(c.calls["llm"].low for c in plan.classes)),
        "render": n_y,
        "evaluate": n_y,
    }
