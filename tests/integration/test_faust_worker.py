"""A Faust app started as a real worker process consumes a topic, answers, and commits its offsets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from tests.support.services import ROOT

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_consumes_and_commits(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    app_id, source, sink = f"echo-{unique}", f"echo-in-{unique}", f"echo-out-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=1, replication_factor=1) for t in (source, sink)]
        )
    finally:
        await admin.close()

    n = 200
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(source, key=str(i).encode(), value=f"hello {i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ECHO_APP_ID": app_id,
        "ECHO_IN": source,
        "ECHO_OUT": sink,
        "ECHO_DATADIR": str(tmp_path / "data"),
        "ECHO_WEB_PORT": str(free_port()),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "tests.integration.apps.echo", "worker", "-l", "info"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    answers: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(90):
            while len(answers) < n:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        assert r.key is not None and r.value is not None
                        answers[r.key] = r.value
        # The worker commits on its own schedule; wait for it to cover everything it answered.
        committed = None
        checker = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=app_id)
        await checker.start()
        try:
            async with asyncio.timeout(30):
                while committed != n:
                    committed = await checker.committed(TopicPartition(source, 0))
                    await asyncio.sleep(0.5)
        finally:
            await checker.stop()
    finally:
        await consumer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()

    assert answers == {str(i).encode(): f"HELLO {i}".encode() for i in range(n)}
    assert committed == n
