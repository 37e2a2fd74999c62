"""TLS for Splice services: client contexts for outgoing calls and server options for uvicorn.

Outgoing calls (party to party, party to registry) verify the peer against a CA bundle (default:
the system's trust store) and, for mutual TLS, present a client certificate. A server serves a
certificate and key and, when given a client CA bundle, requires client certificates signed by it.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def client_context(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """A verifying client context: trust ``ca_file`` (else the system store), and present
    ``cert_file``/``key_file`` as client certificate when both are given (mutual TLS)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both cert_file and key_file")
    ctx = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def server_options(
    cert_file: Path | None,
    key_file: Path | None,
    client_ca_file: Path | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: none without a certificate (plain HTTP); with one,
    TLS, and with ``client_ca_file`` client certificates are required (mutual TLS)."""
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise ValueError("a client CA bundle needs a server certificate and key")
        return {}
    if cert_file is None or key_file is None:
        raise ValueError("TLS needs both a certificate file and a key file")
    options: dict[str, Any] = {"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)}
    if client_ca_file is not None:
        options |= {"ssl_ca_certs": str(client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def cleartext_over_network(url: str) -> bool:
    """True for a plain ``http`` URL whose host is not loopback: tokens and credentials sent to
    it would cross a network in cleartext."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def require_https(url: str | None, what: str, *, allow_http: bool) -> None:
    """Refuse (ValueError) a plain-http ``url`` to a host off this machine unless allowed."""
    if url is not None and not allow_http and cleartext_over_network(url):
        raise ValueError(
            f"{what} {url} is plain http to another host: use https, or set allow_insecure_http "
            "on a network you trust (a private network behind a TLS-terminating proxy)"
        )


__all__ = ["cleartext_over_network", "client_context", "require_https", "server_options"]
