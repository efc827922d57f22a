"""Faust agents of the riskmon worker; importing this package registers them on ``streams.app``.

One module per stream: :mod:`.prices`, :mod:`.instruments`, :mod:`.fund` (group-side validation of
the reference topics; state via :mod:`.reference`), :mod:`.positions`, :mod:`.balances` (account
tables + engines), :mod:`.aggregate` (partials and the combining agent), :mod:`.lifecycle`
(rebalance hooks). Shared state: :mod:`.runtime`.
"""

from __future__ import annotations

from streams.agents import (
    aggregate,
    balances,
    fund,
    instruments,
    lifecycle,
    positions,
    prices,
)
from streams.agents.runtime import runtime

__all__ = [
    "aggregate",
    "balances",
    "fund",
    "instruments",
    "lifecycle",
    "positions",
    "prices",
    "runtime",
]
