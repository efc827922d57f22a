"""``riskmon top``: the live watch list from Redis (a rich table on a TTY, plain text otherwise)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from typing import Any, Literal, TextIO

from redis.exceptions import RedisError

from streams.adapters.redis_store import DEFAULT_PREFIX, DEFAULT_REDIS_URL, RedisWatchList

COLUMNS: tuple[tuple[str, str], ...] = (
    ("rank", "#"),
    ("account", "account"),
    ("state", "state"),
    ("utilization_ratio", "util"),
    ("distance_to_liquidation_ratio", "to liq"),
    ("distance_to_bankruptcy_ratio", "to bkr"),
    ("liquidation_probability", "p(liq)"),
    ("equity_usd", "equity $"),
    ("mm_usd", "MM $"),
    ("ts_event", "age"),
    ("worker", "worker"),
)
STATE_STYLE = {
    "watch": "yellow",
    "at_risk": "dark_orange",
    "liquidatable": "red",
    "underwater": "bold white on red",
}


def _redis_defaults() -> tuple[str, str]:
    """(url, prefix) from ``RISKMON_REDIS__URL`` / ``RISKMON_REDIS__PREFIX`` (the settings)."""
    try:
        from streams.settings import get_settings

        r = get_settings().redis
        return r.url, r.prefix
    except Exception:  # invalid environment: fall back to the defaults
        return (
            os.environ.get("RISKMON_REDIS__URL", DEFAULT_REDIS_URL),
            os.environ.get("RISKMON_REDIS__PREFIX", DEFAULT_PREFIX),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    url, prefix = _redis_defaults()
    parser.add_argument(
        "--redis-url",
        default=url,
        help="Redis URL (default: $RISKMON_REDIS__URL, here %(default)s)",
    )
    parser.add_argument(
        "--prefix",
        default=prefix,
        help="key prefix of the venue's watch list ($RISKMON_REDIS__PREFIX, here %(default)s)",
    )
    parser.add_argument(
        "--by",
        choices=("utilization", "distance"),
        default="utilization",
        help="rank by margin utilization (highest first) or distance to liquidation (closest)",
    )
    parser.add_argument("-n", type=int, default=20, help="rows to show (default: %(default)s)")
    parser.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS until interrupted (default: print once)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain text even on a terminal (for scripts)"
    )


def _fmt(key: str, value: Any, now: float) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str) or key == "rank":
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if key.endswith("_ratio") or key == "liquidation_probability":
        return f"{v:.3f}" if key == "utilization_ratio" else f"{v * 100:.2f}%"
    if key.endswith("_usd"):
        return f"{v:,.0f}"
    if key == "ts_event":
        return f"{max(0.0, now - v):.1f}s" if v > 0 else "-"
    return f"{v:g}"


def format_rows(rows: list[dict[str, Any]], now: float | None = None) -> list[list[str]]:
    now = time.time() if now is None else now
    return [[_fmt(key, r.get(key), now) for key, _ in COLUMNS] for r in rows]


def render_plain(rows: list[dict[str, Any]], size: int, by: str, out: TextIO) -> None:
    header = [title for _, title in COLUMNS]
    body = format_rows(rows)
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=False)]
    print(f"riskmon watch list — {size} accounts, by {by}", file=out)
    for line in (header, *body):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
    if not rows:
        print("(no account in state watch or worse)", file=out)
    out.flush()


NARROW_DROP = ("worker", "mm_usd", "distance_to_bankruptcy_ratio")


def render_rich(rows: list[dict[str, Any]], size: int, by: str, width: int = 120) -> Any:
    from rich.table import Table

    table = Table(
        title=f"riskmon watch list — {size} accounts, by {by}",
        caption=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    # On a narrow terminal drop the least useful columns rather than ellipsizing every cell.
    keep = [i for i, (key, _) in enumerate(COLUMNS) if width >= 110 or key not in NARROW_DROP]
    for i in keep:
        key, title = COLUMNS[i]
        justify: Literal["left", "right"] = (
            "left" if key in ("account", "state", "worker") else "right"
        )
        table.add_column(title, justify=justify, no_wrap=True)
    for r, cells in zip(rows, format_rows(rows), strict=True):
        table.add_row(*(cells[i] for i in keep), style=STATE_STYLE.get(str(r.get("state")), ""))
    return table


async def _snapshot(store: RedisWatchList, n: int, by: str) -> tuple[list[dict[str, Any]], int]:
    rows = await store.top(n, by=by)  # type: ignore[arg-type]
    return rows, await store.size()


async def amain(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    store = RedisWatchList.from_url(args.redis_url, prefix=args.prefix)
    plain = args.plain or not out.isatty()
    try:
        if plain:
            while True:
                rows, size = await _snapshot(store, args.n, args.by)
                render_plain(rows, size, args.by, out)
                if args.watch is None:
                    return 0
                await asyncio.sleep(args.watch)
                print(file=out)
        from rich.console import Console
        from rich.live import Live

        console = Console(file=out)
        rows, size = await _snapshot(store, args.n, args.by)
        if args.watch is None:
            console.print(render_rich(rows, size, args.by, console.width))
            return 0
        with Live(
            render_rich(rows, size, args.by, console.width), console=console, auto_refresh=False
        ) as live:
            while True:
                await asyncio.sleep(args.watch)
                rows, size = await _snapshot(store, args.n, args.by)
                live.update(render_rich(rows, size, args.by, console.width), refresh=True)
    finally:
        await store.aclose()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, RedisError) as exc:
        print(f"riskmon top: cannot read {args.redis_url}: {exc}", file=sys.stderr)
        return 1


def main() -> None:  # pragma: no cover - convenience for `python -m streams.adapters.top`
    parser = argparse.ArgumentParser(prog="riskmon top")
    add_arguments(parser)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run(parser.parse_args()))


if __name__ == "__main__":  # pragma: no cover
    main()
