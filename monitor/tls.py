"""TLS client contexts from certificate files: the one place such files are read.

Its own room (stdlib only) because three rooms need it and none may import another: the site
configuration checks the files while it loads, so a file that holds the wrong thing fails
``check-config``; the MQTT link and the InfluxDB writer build their connections from them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "tls_context"]


def _ssl_reason(error: OSError) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error.strerror or error)


def _no_password() -> str:
    """An encrypted key must fail to load, not make OpenSSL prompt on the terminal."""
    return ""


def tls_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client's TLS context: the broker or server verified against ``ca_file`` (else the
    system's CAs), and a client certificate when ``cert_file`` is given.

    Used by ``check-config`` and by the connections alike, so a file that holds the wrong thing
    fails the check, not the first connection. Blocking (reads files). A ``ValueError`` names
    the key and the file at fault.
    """
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (ssl.SSLError, OSError) as error:
        msg = f"ca_file {ca_file}: holds no CA certificate in PEM format ({_ssl_reason(error)})"
        raise ValueError(msg) from None
    if cert_file is None:
        return context
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cert_file))
    except (ssl.SSLError, OSError) as error:
        msg = f"cert_file {cert_file}: holds no certificate in PEM format ({_ssl_reason(error)})"
        raise ValueError(msg) from None
    key = None if key_file is None else str(key_file)
    try:
        context.load_cert_chain(str(cert_file), key, password=_no_password)
    except (ssl.SSLError, OSError) as error:
        where = f"cert_file {cert_file}" if key_file is None else f"key_file {key_file}"
        msg = (
            f"{where}: holds no unencrypted private key of the certificate in cert_file "
            f"({_ssl_reason(error)})"
        )
        raise ValueError(msg) from None
    return context


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A private CA and an optional client certificate, as a connection's settings carry them."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """The connection's TLS context (:func:`tls_context`); blocking."""
        return tls_context(self.ca_file, self.cert_file, self.key_file)
