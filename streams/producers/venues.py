"""The simulated venue: :func:`build_venue` (``generate_venue``, tiled above a size)."""

from __future__ import annotations

from dataclasses import replace

from streams.sim.venue import SimAccount, Venue, VenueConfig, generate_venue


def tile_venue(venue: Venue, n_accounts: int) -> Venue:
    """A venue of ``n_accounts`` built by repeating ``venue``'s accounts under new names.

    Generating 100,000 accounts one by one takes tens of seconds; benchmarks only need a book of
    that size with the generator's distribution, which repetition preserves.
    """
    base = venue.accounts
    if n_accounts <= len(base):
        return replace(venue, accounts=base[:n_accounts])
    digits = max(6, len(str(n_accounts)))
    accounts = tuple(
        SimAccount(f"acct-{i:0{digits}d}", a.wallet_balance, a.positions)
        for i, a in ((i, base[i % len(base)]) for i in range(n_accounts))
    )
    funds = {f: b * n_accounts / len(base) for f, b in venue.funds.items()}
    return replace(venue, accounts=accounts, funds=funds)


def build_venue(accounts: int, seed: int, *, generate_at_most: int | None = None) -> Venue:
    """``generate_venue`` with ``accounts`` accounts; above ``generate_at_most``, tiled."""
    n = accounts if generate_at_most is None else min(accounts, generate_at_most)
    venue = generate_venue(seed=seed, config=VenueConfig(n_accounts=n))
    return tile_venue(venue, accounts) if n < accounts else venue
