"""The transport limit of ``python -m bench``: driftline's own Kafka loop with no processing at all.

:class:`agent.serving.loop.ServingLoop` (``getmany`` of up to 500 records, hand-built producer batches,
commit after acks, 4 batches in flight), with a handler that republishes every consumed record's key
and value unchanged to the output topic, on the same partition number. No Faust, no decoding: what
is left is what consuming, producing and committing cost one Python process.

Run by ``bench/run.py`` as its own process: ``python -m bench._passthrough '<json config>'``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiokafka.structs import ConsumerRecord

from agent.serving.loop import OutgoingMessage, ServingLoop

__all__ = ["PassThrough", "main"]


class PassThrough:
    """A batch handler that republishes each record as it is."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[OutgoingMessage]:
        topic = self.topic
        return [OutgoingMessage(topic, r.key, r.value, r.partition) for r in records]


async def _serve(cfg: dict[str, Any]) -> None:
    options = {"bootstrap_servers": cfg["bootstrap"]}
    loop = ServingLoop(
        topics=[cfg["requests"]],
        handler=PassThrough(cfg["predictions"]),
        consumer_options=options,
        producer_options=options,
        group_id=cfg["group"],
    )
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    await loop.start()
    try:
        await stop.wait()
    finally:
        await loop.stop()


def main(argv: list[str]) -> None:
    asyncio.run(_serve(json.loads(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
