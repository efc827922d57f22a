"""Risk-state transitions as entries of the Redis transitions stream (flat string fields)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any

from streams.adapters.redis_store.rows import first_field, parse_state
from streams.engine.models import RiskState


def _stream_value(value: Any) -> str:
    if isinstance(value, RiskState):
        return value.label
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def transition_fields(transition: Any, worker: str) -> dict[str, str]:
    """Flatten a ``StateTransition`` (pydantic model, dataclass, mapping or plain object)."""
    if hasattr(transition, "model_dump"):
        data = dict(transition.model_dump())
    elif dataclasses.is_dataclass(transition) and not isinstance(transition, type):
        data = {f.name: getattr(transition, f.name) for f in dataclasses.fields(transition)}
    elif isinstance(transition, Mapping):
        data = dict(transition)
    else:
        data = {k: v for k, v in vars(transition).items() if not k.startswith("_")}
    fields = {k: _stream_value(v) for k, v in data.items() if v is not None}
    fields.setdefault("worker", worker)
    return fields


def transition_account(transition: Any) -> str:
    return str(first_field(transition, "account", "account_id"))


def transition_target(transition: Any) -> RiskState:
    return parse_state(first_field(transition, "new_state", "to_state", "current", "new", "state"))
