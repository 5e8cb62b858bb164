"""Why a TLS connection to Kafka fails, in words: asked only after aiokafka could not connect.

aiokafka reports a refused TLS session as "Connection at host:port closed" (a broker with
`ssl.client.auth=required` closes it after the TLS 1.3 handshake when no client certificate came).
That names neither TLS nor what to fix. This probe opens one TLS session to the first bootstrap
server with the same `ssl.SSLContext` and reads what the broker says: its TLS alert, or our own
verification error for its certificate. It writes nothing to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Final

_CLIENT_CERTIFICATE_ALERTS: Final = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",  # what Java's TLS sends when a required client certificate did not come
    "HANDSHAKE_FAILURE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
)


def first_server(bootstrap_servers: str) -> tuple[str, int] | None:
    """(host, port) of the first `host:port` (`[v6]:port` too); None when it is not one."""
    first = bootstrap_servers.split(",", maxsplit=1)[0].strip()
    host, _, port = first.rpartition(":")
    host = host.strip("[]")
    return (host, int(port)) if host and port.isdigit() else None


async def tls_failure(
    bootstrap_servers: str, context: ssl.SSLContext, *, client_certificate: bool, timeout_seconds: float
) -> str | None:
    """What the TLS session with the first bootstrap server ends with, or None when TLS is not why
    (it works, or the server cannot be reached at all: the caller's error already says so)."""
    server = first_server(bootstrap_servers)
    if server is None:
        return None
    host, port = server
    where = f"TLS with {host}:{port}"
    writer = None
    try:
        async with asyncio.timeout(timeout_seconds):
            reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, timeout_seconds / 2)):
                    await reader.read(1)  # a broker that refuses the client sends its alert right after the handshake
    except ssl.SSLCertVerificationError as error:
        return f"{where}: the broker's certificate is not trusted: {error.verify_message or error.reason}"
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if not any(alert in reason for alert in _CLIENT_CERTIFICATE_ALERTS):
            hint = "the handshake failed"
        elif client_certificate:
            hint = "the broker does not accept the client certificate"
        else:
            hint = "the broker requires a client certificate and none was given"
        return f"{where}: {hint} ({reason})"
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return None
