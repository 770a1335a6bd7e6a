"""A point written with influxdb-client is read back with a Flux query from the real InfluxDB 2.x."""

from __future__ import annotations

import time

import pytest
from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS

from tests.support.services import InfluxEndpoint

pytestmark = pytest.mark.integration


def test_write_then_query_back(influx: InfluxEndpoint, unique: str) -> None:
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        assert client.ping()
        now_ns = time.time_ns()
        point = (
            Point("roundtrip").tag("run", unique).field("value", 42.5).field("label", "drift").time(now_ns)
        )
        client.write_api(write_options=SYNCHRONOUS).write(bucket=influx.bucket, record=point)

        tables = client.query_api().query(
            f'from(bucket: "{influx.bucket}") |> range(start: -1h) '
            f'|> filter(fn: (r) => r._measurement == "roundtrip" and r.run == "{unique}")'
        )
        fields = {rec.get_field(): rec.get_value() for table in tables for rec in table.records}
        times = {rec.get_time().timestamp() for table in tables for rec in table.records}

    assert fields == {"value": 42.5, "label": "drift"}
    assert len(times) == 1
    assert abs(times.pop() - now_ns / 1e9) < 1e-3
