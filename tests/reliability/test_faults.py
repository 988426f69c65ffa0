"""Fault injection: every fault the simulator can inject, at 20 %, over a 20-class run; then all at once.

Whatever the fault, the run must finish; every class ends complete or failed with its reason; no call
exceeds its attempt bound; the traces account for every request the server saw (no hidden SDK retries);
the manifest has no partial or duplicate row and every row's file is in the run folder with its hash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import audit, classes, requests_sent, role_flags, traces

NAMES = classes(20)
MAX_ATTEMPTS = 4
# Retried faults back off for a few ms; a 429's Retry-After is honoured, so keep it tiny too.
FAST = role_flags(max_attempts=MAX_ATTEMPTS, backoff_initial_s=0.005, backoff_max_s=0.02, max_in_flight=8)
RETRIED = ("429", "500", "503", "hang", "reset", "malformed_json", "bad_image")


def run(tmp_path: Path, sim: Simulator, *extra: str) -> tuple[int, Path]:
    data = make_dataset(tmp_path / "data", NAMES)
    out = tmp_path / "run"
    code = main(agent_argv(data, out, sim.base_url, *FAST, *extra, k=3))
    return code, out


@pytest.mark.parametrize("kind", ["429", "500", "503", "hang", "reset", "malformed_json", "nontemplate",
                                  "bad_image", "refusal"])
def test_one_fault_kind_at_20_percent(tmp_path: Path, kind: str) -> None:
    # A hang outlives the client's timeout (0.5 s) and is retried; other runs keep the default timeout.
    timeout = role_flags(timeout_s=0.5) if kind == "hang" else []
    with Simulator(SimConfig(seed=7, retry_after_s=0.01, hang_s=3.0, **{f"rate_{kind}": 0.2})) as sim:
        code, out = run(tmp_path, sim, *timeout)
        stats = sim.stats()
    assert code in (0, 1)
    info, _ = audit(out, list(NAMES), max_attempts=MAX_ATTEMPTS)
    assert stats["faults"].get(kind, 0) > 0, f"the simulator never injected {kind}: {stats['faults']}"
    rows = traces(out)
    assert requests_sent(rows) == stats["total"], "a request the traces do not account for"
    if kind in RETRIED:
        assert any(r["attempts"] > 1 for r in rows), "a retryable fault was never retried"
    if kind == "refusal":
        # A content-policy 400 is final at once: never retried, recorded on the item, reason kept.
        refused = [r for r in rows if r["error.type"] == "refused"]
        assert refused and all(r["attempts"] == 1 for r in refused)
    if kind == "nontemplate":
        counters = [c["counters"] for c in info["classes"].values()]
        assert sum(c.get("describe_reasked", 0) + c.get("extend_off_template", 0) for c in counters) > 0


def test_all_fault_kinds_at_once(tmp_path: Path) -> None:
    rates = {f"rate_{k}": 0.04 for k in ("429", "500", "503", "hang", "reset", "malformed_json",
                                            "nontemplate", "bad_image", "refusal")}
    with Simulator(SimConfig(seed=3, retry_after_s=0.01, hang_s=3.0, **rates)) as sim:
        code, out = run(tmp_path, sim, *role_flags(timeout_s=0.5))
        stats = sim.stats()
    assert code in (0, 1)
    info, rows = audit(out, list(NAMES), max_attempts=MAX_ATTEMPTS)
    assert len(stats["faults"]) >= 6, stats["faults"]  # most kinds really happened in one run
    assert requests_sent(traces(out)) == stats["total"]
    complete = [name for name, entry in info["classes"].items() if entry["status"] == "complete"]
    assert complete and rows, "no class survived 30 % faults with 4 attempts per call"
