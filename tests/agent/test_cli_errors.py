"""What a new user sees for a mistyped or meaningless flag: one line, a suggestion, a pointer to --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.run import build_parser, main
from store.cli import OneLineParser, suggest
from tests.reliability.helpers import REPO, agent_env


@pytest.mark.parametrize(("argv", "needle"), [
    (["--target", "12"], "unknown argument --target; did you mean --target-per-class?"),
    (["--thresold", "0.3"], "unknown argument --thresold; did you mean --threshold?"),
    (["--lmm-image-size", "256x256"], "unknown argument --lmm-image-size"),  # not a setting of a chat role
    (["--t2i-temperature", "0.7"], "unknown argument --t2i-temperature"),  # not a setting of the image role
])
def test_a_mistyped_flag_is_one_line_with_a_suggestion(argv: list[str], needle: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--classes", "tail.txt", "--out", "r", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {needle}") and "--help" in err[0], err
    assert "usage:" not in err[0]


def test_no_abbreviations(capsys: pytest.CaptureFixture[str]) -> None:
    """``--target 12`` must not quietly mean ``--target-per-class 12``."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--target", "12"])
    assert "did you mean --target-per-class?" in capsys.readouterr().err


def test_help_lists_only_the_settings_of_each_role() -> None:
    text = build_parser().format_help()
    assert "--t2i-image-size" in text and "--llm-temperature" in text and "--lmm-max-image-side" in text
    for meaningless in ("--lmm-image-size", "--t2i-temperature", "--llm-max-image-side", "--t2i-max-tokens",
                        "--llm-image-quality", "--lmm-response-format"):
        assert meaningless not in text


def test_suggest_prefers_the_one_flag_a_prefix_names() -> None:
    assert suggest("--max-c", ["--max-cost", "--max-calls"]) in ("--max-cost", "--max-calls")
    assert suggest("--out-dir", ["--out"]) == "--out"
    assert isinstance(OneLineParser(prog="x"), OneLineParser)


def test_the_inspector_and_report_say_it_the_same_way() -> None:
    for module, argv in (("agent.traces", ["RUN", "summary", "--clas", "fox"]), ("agent.report", ["RUN", "--x"])):
        done = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, env=agent_env(),
                              capture_output=True, text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: unknown argument"), lines
