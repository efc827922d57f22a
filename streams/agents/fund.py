"""``insurance-fund`` (key fund): validated and counted by the group.

Every worker keeps every fund's latest balance through its group-less reader
(:mod:`streams.agents.reference`); the combining worker uses them for the venue figures.
"""

from __future__ import annotations

import faust

from streams.agents._inputs import reference_input
from streams.app import app, fund_topic
from streams.engine.wire import EventKind


@app.agent(fund_topic, name="riskmon-insurance-fund")
async def fund_agent(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await reference_input(EventKind.FUND, event)
