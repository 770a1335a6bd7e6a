from __future__ import annotations

import io

import pytest

from producers.config import KafkaConfig, ProducerSettings, TopicConfig
from producers.errors import PublishError
from producers.publish import Progress, PublishSummary, TokenBucket, _Batches, _KeyHashes, publish
from producers.scenarios import generate
from producers.stream import MessageKind
from tests.support.kafka import create_topics, read_topic


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_paces_to_the_rate_whatever_the_wake_ups() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, clock=clock)
    for i in range(5000):
        wait = bucket.reserve()
        # Waits under 2 ms are skipped by the publisher, and sleeps overshoot: both even out.
        if wait > 0.002:
            clock.now += wait * 1.3
        clock.now += 0.00001 if i % 2 else 0.0
    assert clock.now == pytest.approx(5000 / 1000 - bucket.burst / 1000, rel=0.01)


def test_token_bucket_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError, match="above 0"):
        TokenBucket(0)


def test_progress_on_a_terminal_rewrites_one_line_at_most_four_times_a_second() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock, out = FakeClock(), Tty()
    progress = Progress(out, clock=clock)
    for step in range(1, 101):  # 1 s in 10 ms steps
        clock.now = step / 100
        progress.update(step * 10, step * 10, 0)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert "1,000 events (1,000 outcomes, 0 bad) | 1,000/s | 1.0 s" in text


def test_progress_into_a_log_writes_a_line_every_five_seconds() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(out, clock=clock)
    for second in range(1, 13):
        clock.now = float(second)
        progress.update(second, 0, 0)
    progress.update(12, 0, 0, force=True)
    progress.close()
    assert out.getvalue().splitlines() == [
        "5 events (0 outcomes, 0 bad) | 1/s | 5.0 s",
        "10 events (0 outcomes, 0 bad) | 1/s | 10.0 s",
        "12 events (0 outcomes, 0 bad) | 1/s | 12.0 s",
    ]


def test_summary_rate() -> None:
    summary = PublishSummary(10, 5, 1, 1, 0, 0, sending_s=0.0, duration_s=0.0)
    assert summary.events == 12 and summary.rate == 0.0


def test_partitions_are_the_default_partitioners() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitions = [0, 1, 2, 3, 4]
    batches = _Batches(None, "topic", partitions, _KeyHashes(capacity=16))  # forgets now and then
    for i in range(200):
        key = f"calm-s0-{i % 50}".encode()
        assert batches.partition_of(key) == DefaultPartitioner()(key, partitions, partitions)


async def test_unreachable_broker_is_a_publish_error() -> None:
    settings = ProducerSettings(kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(PublishError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        await publish(generate("calm", count=1), settings=settings)


def settings_for(bootstrap: str, unique: str) -> ProducerSettings:
    return ProducerSettings(
        kafka=KafkaConfig(bootstrap_servers=bootstrap),
        topics=TopicConfig(requests=f"prod-req-{unique}", outcomes=f"prod-out-{unique}"),
    )


@pytest.mark.integration
async def test_publishes_exactly_the_generated_stream(kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique)
    await create_topics(kafka_bootstrap, [settings.topics.requests, settings.topics.outcomes], partitions=3)
    stream = generate("schema", model="classification-20", seed=4, count=3000, outcome_share=0.5)
    # A small chunk and linger make the run wait for acknowledgements and send partial batches too.
    summary = await publish(stream, settings=settings, chunk=700, linger_ms=1)

    expected = list(stream)
    sent_requests = {(m.key, m.value) for m in expected if m.kind is not MessageKind.OUTCOME}
    sent_outcomes = {(m.key, m.value) for m in expected if m.kind is MessageKind.OUTCOME}
    assert summary.events == 3000 and summary.outcomes == len(sent_outcomes)
    assert summary.broken == stream.stats.broken > 0 and summary.garbage == stream.stats.garbage > 0
    assert summary.drifts_applied == summary.drifts_scheduled == 2

    requests = await read_topic(kafka_bootstrap, settings.topics.requests, 3000)
    outcomes = await read_topic(kafka_bootstrap, settings.topics.outcomes, len(sent_outcomes))
    assert len(requests) == 3000 and len(outcomes) == len(sent_outcomes)
    assert {(r.key, r.value) for r in requests} == sent_requests
    assert {(r.key, r.value) for r in outcomes} == sent_outcomes
    # Keyed by request id with the default partitioner: an outcome lands on its request's partition.
    partition = {r.key: r.partition for r in requests}
    assert all(partition[r.key] == r.partition for r in outcomes)
    assert len(set(partition.values())) == 3


@pytest.mark.integration
async def test_rate_and_outcome_delay(kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique)
    stream = generate("calm", seed=1, count=200)
    summary = await publish(stream, settings=settings, rate=400, outcome_delay_s=0.5)
    # 200 events at 400/s, less the bucket's initial burst of 20, then the last outcome's delay.
    assert summary.sending_s >= 180 / 400 - 0.05
    assert summary.duration_s >= summary.sending_s + 0.5 - 0.05
    assert summary.rate < 200 / (180 / 400) * 1.02
    requests = await read_topic(kafka_bootstrap, settings.topics.requests, 200)
    outcomes = await read_topic(kafka_bootstrap, settings.topics.outcomes, 200)
    sent_at = {r.key: r.timestamp for r in requests}
    assert len(outcomes) == 200
    assert min(r.timestamp - sent_at[r.key] for r in outcomes) >= 450  # milliseconds
