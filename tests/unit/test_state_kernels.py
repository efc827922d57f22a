"""The compiled state machine (book_kernels._next_state, isolated pools on ticks) is the same
function as StateMachine.next_state / next_states (states.py): pinned on a grid around every
threshold, and all three reject NaN."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from streams.engine.book_kernels import _next_state, iso_top, iso_top_one
from streams.engine.config import EngineConfig
from streams.engine.models import RiskState
from streams.engine.states import StateMachine

CONFIG = EngineConfig()
UP = CONFIG.utilization_thresholds().astype(np.float64)
DOWN = UP - CONFIG.hysteresis


def utilizations() -> list[float]:
    out = [0.0, 0.3, 5.0, math.inf]
    for t in [*UP.tolist(), *DOWN.tolist()]:
        out += [t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf), t - 1e-3, t + 1e-3]
    return out


def test_kernel_equals_state_machine_on_a_grid() -> None:
    machine = StateMachine(CONFIG)
    utils, equities, prevs = [], [], []
    for util, equity, prev in itertools.product(utilizations(), [-1.0, 0.0, 1.0], range(5)):
        want = machine.next_state(util, equity, prev)
        assert _next_state(util, equity, prev, UP, DOWN) == want, (util, equity, prev)
        utils.append(util)
        equities.append(equity)
        prevs.append(prev)
    vector = machine.next_states(np.array(utils), np.array(equities), np.array(prevs, np.int8))
    scalar = [machine.next_state(u, e, p) for u, e, p in zip(utils, equities, prevs, strict=True)]
    assert vector.tolist() == scalar
    assert set(scalar) == set(map(int, RiskState))  # the grid reaches every state


@pytest.mark.parametrize(("util", "equity"), [(math.nan, 1.0), (0.5, math.nan)])
def test_nan_is_rejected_everywhere(util: float, equity: float) -> None:
    machine = StateMachine(CONFIG)
    with pytest.raises(ValueError, match="NaN"):
        machine.next_state(util, equity, 0)
    with pytest.raises(ValueError, match="NaN"):
        machine.next_states(np.array([util]), np.array([equity]), np.zeros(1, np.int8))
    with pytest.raises(ValueError, match="NaN"):
        _next_state(util, equity, 0, UP, DOWN)


def test_iso_top_is_the_highest_held_level() -> None:
    rng = np.random.default_rng(3)
    levels = (rng.random((200, len(RiskState))) < 0.2).astype(np.int32)
    want = [max((s for s in range(levels.shape[1]) if levels[a, s]), default=0) for a in range(200)]
    out = np.full(200, 9, dtype=np.int8)
    iso_top(levels, np.arange(0, 200, 2, dtype=np.int64), out)
    for a in range(1, 200, 2):
        iso_top_one(levels, a, out)
    assert out.tolist() == want
