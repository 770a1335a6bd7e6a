"""A loopback TCP server that speaks just enough of the Kafka protocol to take a SASL/PLAIN login.

The shared test broker has a PLAINTEXT listener only, where a client's SASL handshake fails before the
password is sent. This server advertises SASL, accepts the PLAIN handshake, keeps the credentials the
client sent, and then closes the connection: enough for a test to see what a real client does with a
password on the way (what it logs, what it sends), without a SASL broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from aiokafka.protocol.admin import (
    ApiVersionResponse_v0,
    SaslAuthenticateResponse_v0,
    SaslHandShakeResponse_v1,
)

_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36


class FakeSaslBroker:
    """Answers ApiVersions, SaslHandshake (PLAIN) and SaslAuthenticate; closes on anything else.

    ``logins`` holds the ``(username, password)`` of every PLAIN login received.
    """

    def __init__(self) -> None:
        self.logins: list[tuple[str, str]] = []
        self._server: asyncio.Server | None = None

    @property
    def bootstrap(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def __aenter__(self) -> FakeSaslBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                message = await reader.readexactly(size)
                api_key, _, correlation_id = struct.unpack(">hhi", message[:8])
                (client_id_size,) = struct.unpack(">h", message[8:10])
                body = message[10 + max(client_id_size, 0) :]
                if api_key == _API_VERSIONS:
                    response = ApiVersionResponse_v0(
                        error_code=0,
                        api_versions=[
                            (_API_VERSIONS, 0, 0),
                            (_SASL_HANDSHAKE, 0, 1),
                            (_SASL_AUTHENTICATE, 0, 0),
                        ],
                    )
                elif api_key == _SASL_HANDSHAKE:
                    response = SaslHandShakeResponse_v1(error_code=0, enabled_mechanisms=["PLAIN"])
                elif api_key == _SASL_AUTHENTICATE:
                    # SaslAuthenticateRequest_v0: the token as int32-sized bytes, "\0user\0password".
                    (token_size,) = struct.unpack(">i", body[:4])
                    _, user, password = body[4 : 4 + token_size].split(b"\0")
                    self.logins.append((user.decode(), password.decode()))
                    response = SaslAuthenticateResponse_v0(
                        error_code=0, error_message=None, sasl_auth_bytes=b""
                    )
                else:
                    return  # enough: the login is over
                payload = struct.pack(">i", correlation_id) + response.encode()
                writer.write(struct.pack(">i", len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
