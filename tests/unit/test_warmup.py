"""``riskmon warm-up`` drives every compiled path once; it must run on a small venue and say so."""

from __future__ import annotations

import pytest

from streams import cli


def test_warm_up_command_runs_the_engine_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["warm-up", "--accounts", "40"]) == 0
    out = capsys.readouterr().out
    assert "kernels ready in" in out
