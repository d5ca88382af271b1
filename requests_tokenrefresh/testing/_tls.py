"""The testing kit's TLS: a throwaway CA, the server's and clients' certificates, TLS per connection.

:class:`~requests_tokenrefresh.testing.AuthServer` with ``tls=True`` serves HTTPS with a
certificate from a CA that `trustme <https://trustme.readthedocs.io>`_ makes for the server alone;
its PEM is written to a temporary directory (removed by :meth:`KitTLS.close`) so that a client can
trust it (``verify=server.ca_path``). With ``client_cert_auth=True`` the server asks every client
for a certificate of that CA (``ssl.CERT_OPTIONAL``: a client without one still connects, and the
token endpoint and API decide), as RFC 8705's mutual TLS does.

The TLS handshake runs in the connection's own thread (:class:`TLSMixIn`), not in the thread that
accepts connections, so a client that connects and says nothing holds up no other client; it is
given :data:`HANDSHAKE_TIMEOUT` seconds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import re
import shutil
import socket
import socketserver
import ssl
import tempfile
import weakref
from pathlib import Path
from typing import Any

__all__ = ["HANDSHAKE_TIMEOUT", "KitTLS", "TLSMixIn", "certificate_thumbprint", "common_name", "peer_certificate"]

#: Seconds a client has to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


def _trustme() -> Any:
    try:
        import trustme
    except ImportError as exc:
        raise ImportError("AuthServer(tls=True) needs trustme: pip install trustme") from exc
    return trustme


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1's ``x5t#S256`` of a DER certificate: base64url of its SHA-256, no padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def peer_certificate(connection: Any) -> bytes | None:
    """The DER certificate the client presented on ``connection``, or None (no TLS, or no certificate)."""
    if not isinstance(connection, ssl.SSLSocket):
        return None
    return connection.getpeercert(binary_form=True)


def common_name(der: bytes) -> str | None:
    """The ``CN`` of a DER certificate's subject, or None."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


class KitTLS:
    """A CA, the server's certificate and its :class:`ssl.SSLContext`, and client certificates.

    Args:
        host: the address the server's certificate names (``localhost`` too).
        client_cert_auth: whether the context asks clients for a certificate of :attr:`ca`.

    Raises:
        ImportError: trustme is not installed.
    """

    def __init__(self, host: str, *, client_cert_auth: bool = False) -> None:
        self.ca: Any = _trustme().CA()
        self._dir = Path(tempfile.mkdtemp(prefix="authserver-tls-"))
        # Removed by close(), or else when this object is collected or the interpreter exits (a
        # server a test never stopped).
        self._remove = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._numbers = itertools.count(1)
        self.ca_path = str(self._dir / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_path)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(host, "localhost").configure_cert(self.context)
        if client_cert_auth:
            self.context.verify_mode = ssl.CERT_OPTIONAL
            self.ca.configure_trust(self.context)

    def issue_client_cert(self, name: str = "client") -> tuple[str, str]:
        """A new client certificate whose subject is ``CN=<name>``, signed by :attr:`ca`: the paths
        of its PEM and its key's. (Its subjectAltName is a name under ``.invalid``: a client id
        need not be a DNS name.)"""
        number = next(self._numbers)
        stem = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{number}"
        cert = self.ca.issue_cert(f"client-{number}.invalid", common_name=name)
        cert_path, key_path = str(self._dir / f"{stem}.pem"), str(self._dir / f"{stem}.key")
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
        return cert_path, key_path

    def close(self) -> None:
        """Remove the temporary directory of the PEM files."""
        self._remove()


class TLSMixIn(socketserver.BaseServer):
    """Serve TLS on each accepted connection when :attr:`ssl_context` is set (mix in before the server class)."""

    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            # The handshake happens here; wrap_socket takes over the socket's descriptor (and closes
            # it if the handshake fails), so shutdown_request's later close of request is a no-op.
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that does not trust the CA, or presented a certificate of another
        try:
            connection.settimeout(None)
            super().finish_request(connection, client_address)
        except ssl.SSLError:
            pass  # a client that went away in the middle of a TLS record is no error either
        finally:
            with contextlib.suppress(OSError):  # the client went away first
                connection.shutdown(socket.SHUT_WR)
            connection.close()
