"""``instruments`` (compacted, key instrument): validated and counted by the group.

Every worker loads all instruments through its group-less reader (:mod:`streams.agents.reference`).
"""

from __future__ import annotations

import faust

from streams.agents._inputs import reference_input
from streams.app import app, instruments_topic
from streams.engine.wire import EventKind


@app.agent(instruments_topic, name="riskmon-instruments")
async def instruments_agent(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await reference_input(EventKind.INSTRUMENT, event)
