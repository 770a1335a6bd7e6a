"""A minimal Faust app run as a real worker process by tests/integration/test_faust_worker.py.

Configured from the environment so that each test run gets its own topics and consumer group.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
    datadir=os.environ["ECHO_DATADIR"],
    web_host="127.0.0.1",
    web_port=int(os.environ["ECHO_WEB_PORT"]),
    # Faust's 60 s default makes every first group join wait about half of it.
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    broker_commit_every=10,
    broker_commit_interval=0.5,
    topic_partitions=1,
    store="memory://",
)
source = app.topic(os.environ["ECHO_IN"], key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ["ECHO_OUT"], key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def echo(stream: faust.StreamT[bytes]) -> None:
    async for key, value in stream.items():
        await sink.send(key=key, value=value.upper())
