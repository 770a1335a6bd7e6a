"""The fan-out: every sink is called, one sink's failure or slowness never touches the others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from agent.alerting.sinks import Sink, SinkFanout
from agent.errors import SinkError
from agent.metrics import MetricPoint, Metrics
from schemas import Alert
from tests.support.alerts import make_alert


class Recording(Sink):
    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def send(self, alert: Alert) -> None:
        self.calls.append(f"send {alert.opened_at_event}")

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        self.calls.append(f"metrics {len(points)}")

    async def flush(self) -> None:
        self.calls.append("flush")

    async def close(self) -> None:
        self.calls.append("close")


class Failing(Sink):
    name = "failing"

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def start(self) -> None:
        raise self.error

    async def send(self, alert: Alert) -> None:
        raise self.error

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        raise self.error

    async def close(self) -> None:
        raise self.error


class Slow(Sink):
    name = "slow"

    async def send(self, alert: Alert) -> None:
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("error", [SinkError("influx down"), RuntimeError("a bug")])
async def test_a_failing_sink_does_not_touch_the_others(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    good = Recording()
    fanout = SinkFanout([Failing(error), good], metrics=metrics)
    await fanout.start()
    await fanout.send(make_alert(1))
    await fanout.send(make_alert(2))
    await fanout.send_metrics([MetricPoint("m", {"v": 1.0})])
    await fanout.flush()
    await fanout.close()
    assert good.calls == ["start", "send 1", "send 2", "metrics 1", "flush", "close"]
    assert fanout.failures == {"failing": 5, "recording": 0}
    assert str(error) in caplog.text
    unexpected = metrics.registry.get_sample_value(
        "driftline_alerts_failed_total", {"sink": "failing", "reason": "unexpected"}
    )
    # A SinkError is counted by the sink itself; only an unexpected exception is counted here.
    assert unexpected == (None if isinstance(error, SinkError) else 2)


async def test_sinks_are_called_concurrently() -> None:
    fast = Recording()
    fanout = SinkFanout([Slow(), fast])
    task = asyncio.create_task(fanout.send(make_alert(1)))
    await asyncio.sleep(0.05)
    assert fast.calls == ["send 1"]  # not waiting for the slow sink
    started = time.perf_counter()
    await task
    assert time.perf_counter() - started < 0.3


async def test_cancellation_is_not_swallowed() -> None:
    fanout = SinkFanout([Slow()])
    task = asyncio.create_task(fanout.send(make_alert(1)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_empty_metrics_batch_is_not_sent() -> None:
    sink = Recording()
    await SinkFanout([sink]).send_metrics([])
    assert sink.calls == []


def test_sink_names_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SinkFanout([Recording(), Recording()])


async def test_base_hooks_are_noops(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    with caplog.at_level(logging.DEBUG):
        await sink.start()
        await sink.send(make_alert())
        await sink.send_metrics([MetricPoint("m", {"v": 1})])
        await sink.flush()
        await sink.close()
    assert sink.stats.delivered == sink.stats.failed == 0


async def test_a_misconfigured_sink_stops_the_start() -> None:
    from agent.errors import ConfigurationError

    good = Recording()
    fanout = SinkFanout([Failing(ConfigurationError("spool in use")), good])
    with pytest.raises(ConfigurationError, match="spool in use"):
        await fanout.start()
    assert good.calls == ["start"]  # the others were still started (and are closed by the caller)
