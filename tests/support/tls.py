"""A self-signed certificate for 127.0.0.1/localhost, so https tests need no external tooling.

The certificate is its own CA (basicConstraints CA=true), so the same PEM file serves as the
server certificate and as the clients' trust bundle (AWS_CA_BUNDLE, rclone --ca-cert).
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    cert_file: Path
    key_file: Path


def _certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def write_self_signed(directory: Path) -> CertFiles:
    """Write ``cert.pem`` and ``key.pem`` (unencrypted PKCS#8) into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    files = CertFiles(cert_file=directory / "cert.pem", key_file=directory / "key.pem")
    files.cert_file.write_bytes(_certificate(key).public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return files
