"""Throwaway credentials for a secured development broker: a CA, the broker's and the
users' certificates (openssl, PEM) and the users' SCRAM passwords.

Layout of ``<home>/security-<port>/``, created once and reused while it exists::

    ca.pem, ca.key                  the development CA (valid 30 days)
    broker.keystore.pem             the broker's key (PKCS#8) and certificate, for
                                    127.0.0.1 and localhost
    <user>.password                 the user's SCRAM password (mode 0600)
    <user>.pem, <user>.key          the user's client certificate (CN=<user>), mutual TLS
    <user>.env                      STREAM_MONITOR_KAFKA__* variables for a service
                                    that connects as the user (no secret in it: the
                                    password is named by file)

Nothing here is fit for production: the CA's key lies next to its certificate.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEV_USERS = ("admin", "monitor", "trainer", "serving")
"""SCRAM users of a secured development broker; ``admin`` is the super user."""
SUPER_USER = "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"
_DAYS = "30"


class SecurityError(RuntimeError):
    """The development credentials could not be made."""


@dataclass(frozen=True)
class DevCredentials:
    """Where the credentials of one secured development broker live."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.keystore.pem"

    def password_file(self, user: str) -> Path:
        return self.directory / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text(encoding="utf-8").strip()

    def cert_file(self, user: str) -> Path:
        return self.directory / f"{user}.pem"

    def key_file(self, user: str) -> Path:
        return self.directory / f"{user}.key"

    def env_file(self, user: str) -> Path:
        return self.directory / f"{user}.env"

    def kafka_settings(self, bootstrap_servers: str, user: str) -> dict[str, str]:
        """The ``kafka`` settings of a service connecting as ``user`` over SASL_SSL."""
        return {
            "bootstrap_servers": bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_username": user,
            "sasl_password_file": str(self.password_file(user)),
            "ssl_cafile": str(self.ca_file),
        }

    def mtls_settings(self, bootstrap_servers: str, user: str) -> dict[str, str]:
        """The ``kafka`` settings of a client proving it is ``user`` by certificate."""
        return {
            "bootstrap_servers": bootstrap_servers,
            "security_protocol": "SSL",
            "ssl_cafile": str(self.ca_file),
            "ssl_certfile": str(self.cert_file(user)),
            "ssl_keyfile": str(self.key_file(user)),
        }

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments creating every user."""
        return [
            arg
            for user in DEV_USERS
            for arg in (
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={user},password={self.password(user)}]",
            )
        ]

    def ensure(self, bootstrap_servers: str) -> None:
        """Make whatever is missing (a complete directory is left as it is)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if not self.ca_file.exists():
            _openssl(
                self.directory,
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", _DAYS,
                "-subj", "/CN=stream-monitor development CA",
            )  # fmt: skip
        if not self.keystore.exists():
            self._sign("broker", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
            key = _openssl(self.directory, "pkcs8", "-topk8", "-nocrypt", "-in", "broker.key")
            # Kafka's PEM keystore: the PKCS#8 key, then the certificate.
            _write_private(self.keystore, key + (self.directory / "broker.pem").read_text())
        for user in DEV_USERS:
            if not self.password_file(user).exists():
                _write_private(self.password_file(user), secrets.token_urlsafe(18) + "\n")
            if not self.cert_file(user).exists():
                self._sign(user, user, "extendedKeyUsage=clientAuth")
            env = "".join(
                f"STREAM_MONITOR_KAFKA__{name.upper()}={value}\n"
                for name, value in self.kafka_settings(bootstrap_servers, user).items()
            )
            self.env_file(user).write_text(env, encoding="utf-8")

    def _sign(self, name: str, common_name: str, extension: str) -> None:
        directory = self.directory
        _openssl(
            directory,
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        )  # fmt: skip
        (directory / f"{name}.ext").write_text(extension + "\n", encoding="utf-8")
        _openssl(
            directory,
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", _DAYS,
            "-extfile", f"{name}.ext",
        )  # fmt: skip
        os.chmod(directory / f"{name}.key", 0o600)
        for leftover in (f"{name}.csr", f"{name}.ext"):
            (directory / leftover).unlink()


def _openssl(directory: Path, *args: str) -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SecurityError("openssl not found on PATH: it makes the development certificates")
    proc = subprocess.run(
        [openssl, *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise SecurityError(f"openssl {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
