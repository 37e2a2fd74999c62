"""Throwaway TLS material for local runs: a CA made at run time and one certificate per service.

``splice demo --tls`` (and the TLS end-to-end test) use it: every process of the local cluster
serves HTTPS with a certificate for ``127.0.0.1`` and ``localhost`` signed by a fresh CA, and the
clients trust only that CA. The CA's key lives in the run's folder and nowhere else; never use
this material outside a local run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.protocol.tls import client_context

_VALID = dt.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class LocalCa:
    """A throwaway certificate authority in ``folder``; issues leaf certificates by name."""

    folder: Path
    ca_file: Path
    _key: ec.EllipticCurvePrivateKey
    _cert: x509.Certificate
    mutual: bool = False
    """Every service also requires client certificates of this CA (mutual TLS)."""

    @classmethod
    def create(cls, folder: Path, *, mutual: bool = False) -> LocalCa:
        """A fresh CA (P-256) whose certificate is ``folder/ca.pem``."""
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Splice throwaway local CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        ca_file = folder / "ca.pem"
        ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, ca_file, key, cert, mutual)

    def issue(self, name: str, *, client: bool = False) -> Pair:
        """A leaf certificate for ``name``: a server certificate for 127.0.0.1 and localhost, or
        (``client``) a client certificate for mutual TLS."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if not client:
            sans: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = f"{name}-client" if client else name
        pair = Pair(self.folder / f"{stem}.pem", self.folder / f"{stem}-key.pem")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.touch(mode=0o600)
        pair.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return pair

    def client_context(self, name: str = "operator") -> ssl.SSLContext:
        """A client context trusting only this CA; with ``mutual``, presenting a client
        certificate for ``name``."""
        pair = self.issue(name, client=True) if self.mutual else None
        return client_context(
            self.ca_file, None if pair is None else pair.cert, None if pair is None else pair.key
        )

    def registry_env(self) -> dict[str, str]:
        """Environment serving the registry over HTTPS with a certificate of this CA."""
        pair = self.issue("registry")
        env = {
            "SPLICE_REGISTRY_TLS_CERT_FILE": str(pair.cert),
            "SPLICE_REGISTRY_TLS_KEY_FILE": str(pair.key),
        }
        if self.mutual:
            env["SPLICE_REGISTRY_TLS_CLIENT_CA_FILE"] = str(self.ca_file)
        return env

    def party_env(self, name: str) -> dict[str, str]:
        """Environment serving party ``name`` over HTTPS; its outgoing calls trust only this CA
        (and, with ``mutual``, present a client certificate of it)."""
        pair = self.issue(f"party-{name}")
        env = {
            "SPLICE_PARTY_TLS_CERT_FILE": str(pair.cert),
            "SPLICE_PARTY_TLS_KEY_FILE": str(pair.key),
            "SPLICE_PARTY_TLS_CA_FILE": str(self.ca_file),
        }
        if self.mutual:
            client = self.issue(f"party-{name}", client=True)
            env |= {
                "SPLICE_PARTY_TLS_CLIENT_CA_FILE": str(self.ca_file),
                "SPLICE_PARTY_TLS_CLIENT_CERT_FILE": str(client.cert),
                "SPLICE_PARTY_TLS_CLIENT_KEY_FILE": str(client.key),
            }
        return env


__all__ = ["LocalCa", "Pair"]
