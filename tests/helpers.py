"""Test helpers: skip when something a test needs is missing, FAIL instead under
``RISKMON_REQUIRE_SERVICES=1`` (set by ``make test``, which installs all of it).

require_or_skip("promtool not installed")     # pytest.fail or pytest.skip
tool("amtool")                                # path of a CLI, or require_or_skip
require_path(CRASHES / "btc.csv")             # a data file, or require_or_skip
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_ENV = "RISKMON_REQUIRE_SERVICES"


def require_or_skip(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``RISKMON_REQUIRE_SERVICES=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def tool(name: str, *, hint: str = "Debian package; `make test` installs it") -> str:
    """Path of the CLI ``name`` (PATH, the venv's bin, /usr/bin), or :func:`require_or_skip`."""
    venv_bin = Path(sys.executable).parent / name
    for candidate in (shutil.which(name), venv_bin, Path("/usr/bin") / name):
        if candidate is not None and Path(candidate).exists():
            return str(candidate)
    require_or_skip(f"{name} not installed ({hint})")


def require_path(path: Path, hint: str = "") -> Path:
    """``path`` if it exists, else :func:`require_or_skip` (e.g. the shared crash data)."""
    if not path.exists():
        require_or_skip(f"not found: {path}" + (f" ({hint})" if hint else ""))
    return path


# The metrics contract (DESIGN.md "Metrics contract"): the raw series that rules and dashboards
# may use (histograms by their _bucket/_sum/_count series).
CONTRACT_METRICS = {
    "riskmon_insurance_fund_balance_usd",
    "riskmon_projected_bad_debt_usd",
    "riskmon_socialized_loss_usd",
    "riskmon_socialized_loss_haircut_ratio",
    "riskmon_fund_exhaustion_shock_ratio",
    "riskmon_liquidatable_notional_usd",
    "riskmon_profitable_upnl_usd",
    "riskmon_accounts",
    "riskmon_mark_price_timestamp_seconds",
    "riskmon_events_total",
    "riskmon_events_rejected_total",
    "riskmon_event_lag_seconds_bucket",
    "riskmon_event_lag_seconds_sum",
    "riskmon_event_lag_seconds_count",
    "riskmon_worker_ready",
    "riskmon_consumer_lag_messages",
}
