#!/usr/bin/env python3
"""Readiness probe for the local Kafka broker started by scripts/kafka.

Speaks just enough of the Kafka wire protocol (stdlib only, no client
library needed) to send an ApiVersions request and then a Metadata request,
and succeeds only when the broker answers with itself in the broker list,
i.e. it has registered with the KRaft controller, is unfenced and serves
client requests.  That is the same point at which a real client can start
producing and consuming.

Usage: kafka-probe.py [--bootstrap 127.0.0.1:9092] [--timeout 2]
                      [--cluster-id ID] [--quiet]
Exit status 0 when ready, 1 otherwise (reason on stderr).
"""

import argparse
import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"driftline-kafka-probe"


class ProbeError(Exception):
    pass


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProbeError("truncated response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def int8(self) -> int:
        return self._take(">b")

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self):
        length = self.int16()
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        if len(raw) != length:
            raise ProbeError("truncated response")
        self.pos += length
        return raw.decode("utf-8", "replace")


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ProbeError("connection closed by broker")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> Reader:
    # Request header v1 (non-flexible): api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    message = header + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    reader = Reader(recv_exact(sock, size))
    # Response header v0: correlation_id (ApiVersions and non-flexible Metadata).
    if reader.int32() != corr:
        raise ProbeError("correlation id mismatch")
    return reader


def probe(host: str, port: int, timeout: float) -> dict:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"cannot connect to {host}:{port}: {exc}") from None
    with sock:
        sock.settimeout(timeout)
        # ApiVersions v0 is accepted by every broker version.
        reader = call(sock, API_VERSIONS, 0, 1, b"")
        error = reader.int16()
        if error:
            raise ProbeError(f"ApiVersions error code {error}")
        ranges = {}
        for _ in range(reader.int32()):
            key, low, high = reader.int16(), reader.int16(), reader.int16()
            ranges[key] = (low, high)
        if API_METADATA not in ranges:
            raise ProbeError("broker does not offer the Metadata API")
        low, high = ranges[API_METADATA]
        # Pick a non-flexible version (<= 8) the broker still accepts (>= 4 on Kafka 4.x).
        version = max(4, low)
        if version > min(8, high):
            raise ProbeError(f"no usable Metadata version in broker range {low}..{high}")
        # Empty topic list (not null): ask about the cluster only, create nothing.
        body = struct.pack(">ib", 0, 0)
        if version >= 8:
            body += struct.pack(">bb", 0, 0)
        reader = call(sock, API_METADATA, version, 2, body)
        reader.int32()  # throttle_time_ms (v3+)
        brokers = []
        for _ in range(reader.int32()):
            node_id, host_, port_ = reader.int32(), reader.string(), reader.int32()
            reader.string()  # rack
            brokers.append((node_id, host_, port_))
        cluster_id = reader.string()
        controller_id = reader.int32()
        return {
            "metadata_version": version,
            "brokers": brokers,
            "cluster_id": cluster_id,
            "controller_id": controller_id,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--cluster-id", help="fail unless the broker reports this cluster id")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    host, _, port = args.bootstrap.rpartition(":")
    try:
        info = probe(host or "127.0.0.1", int(port), args.timeout)
        if not info["brokers"]:
            raise ProbeError("metadata lists no live broker yet")
        if args.cluster_id and info["cluster_id"] != args.cluster_id:
            raise ProbeError(
                f"{args.bootstrap} belongs to cluster {info['cluster_id']}, not {args.cluster_id}"
            )
    except (ProbeError, OSError) as exc:
        if not args.quiet:
            print(f"not ready: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        brokers = ",".join(f"{n}@{h}:{p}" for n, h, p in info["brokers"])
        print(
            f"ready: cluster_id={info['cluster_id']} brokers={brokers} "
            f"controller={info['controller_id']} (Metadata v{info['metadata_version']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
