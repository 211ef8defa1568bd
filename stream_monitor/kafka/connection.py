"""Checking at start that the brokers can be reached the way the settings say.

kafka-python reports a wrong password, an untrusted certificate or a plaintext client
on a TLS listener alike: ``KafkaTimeoutError: Unable to bootstrap`` after 30 s. So
before a service makes its clients, :func:`check_connection` speaks the first steps of
the Kafka protocol itself to the first bootstrap server that answers, with the
settings' own TLS context and credentials::

    TCP connect -> TLS handshake (SSL, SASL_SSL) -> ApiVersions
    -> SaslHandshake (is the mechanism enabled?) -> SaslAuthenticate (PLAIN or SCRAM)

and turns the first step that fails into one line that says what is wrong and which
setting to check (:class:`BrokerAccessError`). A broker that does not answer at all is
waited for up to ``timeout`` seconds (it may still be starting); a refusal is final.
Nothing here logs or returns a secret.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from kafka.net.sasl.scram import ScramClient  # kafka-python's own SCRAM, as its clients use

from stream_monitor.config import KafkaSettings

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
_UNSUPPORTED_SASL_MECHANISM = 33
_CLIENT_ID = b"stream-monitor-check"


class BrokerAccessError(Exception):
    """The brokers cannot be used with these settings; the message says why and what to
    check, naming the settings (never their secret values)."""


class _ClosedError(Exception):
    """The broker closed the connection or sent nothing where an answer was due."""


def check_connection(kafka: KafkaSettings, timeout: float = 30.0) -> None:
    """Raise :class:`BrokerAccessError` unless the first reachable bootstrap server
    accepts a connection with ``kafka``'s security settings."""
    servers = [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()]
    deadline = time.monotonic() + timeout
    unreachable: list[str] = []
    while True:
        unreachable.clear()
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                address = (host.strip("[]"), int(port))
            except ValueError:
                raise BrokerAccessError(
                    f"kafka.bootstrap_servers: {server!r} is not HOST:PORT"
                ) from None
            try:
                sock = socket.create_connection(address, timeout=min(5.0, timeout))
            except OSError as exc:
                unreachable.append(f"{server} ({exc.strerror or exc})")
                continue
            with sock:
                sock.settimeout(max(1.0, min(10.0, deadline - time.monotonic())))
                _check_broker(kafka, server, sock)
            return
        if time.monotonic() >= deadline:
            raise BrokerAccessError(
                f"cannot reach Kafka at {', '.join(unreachable)} (setting "
                "kafka.bootstrap_servers): check the address and that the broker runs"
            )
        time.sleep(0.5)


def _check_broker(kafka: KafkaSettings, server: str, sock: socket.socket) -> None:
    protocol = f"kafka.security_protocol is {kafka.security_protocol}"
    channel: socket.socket = sock
    if kafka.uses_tls:
        channel = _tls(kafka, server, sock)
    try:
        _request(channel, API_VERSIONS, 0, b"")
    except _ClosedError:
        if kafka.uses_tls:
            raise BrokerAccessError(
                f"{server} closed the connection after the TLS handshake: it may require a "
                "client certificate (kafka.ssl_certfile, kafka.ssl_keyfile) that it trusts"
            ) from None
        raise BrokerAccessError(
            f"{server} does not answer a plaintext Kafka request, {protocol}: "
            + (
                "the listener speaks TLS, use SSL or SASL_SSL (and kafka.ssl_cafile)"
                if _speaks_tls(server)
                else "check kafka.security_protocol against the listener's protocol"
            )
        ) from None
    if kafka.uses_sasl:
        _authenticate(kafka, server, channel)
        return
    try:
        # A metadata request (v0, no topics): a SASL listener closes the connection on it.
        _request(channel, 3, 0, struct.pack(">i", 0))
    except _ClosedError:
        raise BrokerAccessError(
            f"{server} closed the connection before authentication, {protocol}: the "
            f"listener wants SASL, use {'SASL_SSL' if kafka.uses_tls else 'SASL_PLAINTEXT'} "
            "with kafka.sasl_username and kafka.sasl_password"
        ) from None


def _tls(kafka: KafkaSettings, server: str, sock: socket.socket) -> ssl.SSLSocket:
    context = kafka.ssl_context()
    assert context is not None
    host = server.rpartition(":")[0].strip("[]")
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            raise BrokerAccessError(
                f"the certificate of {server} does not name {host}: connect by a name it "
                "holds (kafka.bootstrap_servers) or, for a test broker only, set "
                "kafka.ssl_check_hostname to false"
            ) from None
        where = (
            f"kafka.ssl_cafile ({kafka.ssl_cafile})"
            if kafka.ssl_cafile
            else ("the system's trust store (kafka.ssl_cafile is not set)")
        )
        raise BrokerAccessError(
            f"the certificate of {server} is not trusted ({exc.verify_message}): check that "
            f"{where} holds the CA that signed the broker's certificate"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        hint = (
            "the broker rejected the client certificate: check kafka.ssl_certfile"
            if "CERTIFICATE" in str(reason).upper() or "ALERT" in str(reason).upper()
            else "check that the listener speaks TLS (kafka.security_protocol "
            f"{kafka.security_protocol}; a plaintext listener needs PLAINTEXT or SASL_PLAINTEXT)"
        )
        raise BrokerAccessError(f"TLS with {server} failed ({reason}): {hint}") from None


def _speaks_tls(server: str) -> bool:
    """Whether ``server`` completes a TLS handshake (its certificate unchecked: this only
    tells a TLS listener from another)."""
    host, _, port = server.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=5.0) as sock,
            context.wrap_socket(sock),
        ):
            return True
    except (OSError, ValueError):
        return False


def _authenticate(kafka: KafkaSettings, server: str, channel: socket.socket) -> None:
    mechanism = kafka.sasl_mechanism
    user = kafka.sasl_username or ""
    answer = _request(channel, SASL_HANDSHAKE, 1, _string(mechanism))
    error, enabled = _handshake_answer(answer)
    if error == _UNSUPPORTED_SASL_MECHANISM:
        raise BrokerAccessError(
            f"{server} does not accept SASL mechanism {mechanism} (kafka.sasl_mechanism); "
            f"it offers {', '.join(enabled) or 'none'}"
        )
    if error:
        raise BrokerAccessError(f"{server} refused the SASL handshake (Kafka error {error})")
    password = kafka.secret("sasl_password") or ""
    refused = BrokerAccessError(
        f"authentication as {user!r} with {mechanism} failed at {server}: check "
        "kafka.sasl_username and kafka.sasl_password (or the file kafka.sasl_password_file), "
        "and that the user exists for this mechanism"
    )
    if mechanism == "PLAIN":
        _auth_step(channel, f"\0{user}\0{password}".encode(), refused)
        return
    scram = ScramClient(user, password, mechanism)
    server_first = _auth_step(channel, scram.first_message(), refused)
    try:
        scram.process_server_first_message(server_first)
        server_final = _auth_step(channel, scram.final_message(), refused)
        scram.process_server_final_message(server_final)
    except (ValueError, KeyError) as exc:
        raise BrokerAccessError(
            f"{server} answered SCRAM with something unexpected ({type(exc).__name__}): "
            "is it the broker you meant?"
        ) from None


def _auth_step(channel: socket.socket, token: bytes, refused: BrokerAccessError) -> bytes:
    try:
        answer = _request(channel, SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
    except _ClosedError:
        raise refused from None
    (error,) = struct.unpack_from(">h", answer)
    if error:
        raise refused
    _, offset = _nullable_string(answer, 2)
    (size,) = struct.unpack_from(">i", answer, offset)
    return answer[offset + 4 : offset + 4 + max(size, 0)]


# ---- the wire format: request header v1, response header v0 (what these versions use) ----


def encode_request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """A size-prefixed Kafka request.

    >>> request = encode_request(18, 0, 7, b"")
    >>> request[:4].hex(), request[4:12].hex(), request[12:14].hex(), request[14:]
    ('0000001e', '0012000000000007', '0014', b'stream-monitor-check')
    """
    header = struct.pack(">hhi", api_key, version, correlation_id) + _string(_CLIENT_ID)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _request(channel: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    """Send one request and return its answer's body (after the correlation id)."""
    correlation_id = api_key
    try:
        channel.sendall(encode_request(api_key, version, correlation_id, body))
        (size,) = struct.unpack(">i", _read(channel, 4, api_key))
        answer = _read(channel, size, api_key)
    except (OSError, ssl.SSLError, struct.error):
        raise _ClosedError(api_key) from None
    if struct.unpack_from(">i", answer)[0] != correlation_id:
        raise _ClosedError(api_key)
    return answer[4:]


def _read(channel: socket.socket, size: int, api_key: int) -> bytes:
    if not 0 <= size <= 1 << 24:
        raise _ClosedError(api_key)
    data = b""
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise _ClosedError(api_key)
        data += chunk
    return data


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">h", len(raw)) + raw


def _nullable_string(data: bytes, offset: int) -> tuple[str | None, int]:
    (size,) = struct.unpack_from(">h", data, offset)
    if size < 0:
        return None, offset + 2
    return data[offset + 2 : offset + 2 + size].decode(errors="replace"), offset + 2 + size


def _handshake_answer(answer: bytes) -> tuple[int, list[str]]:
    """SaslHandshake v1's error code and the mechanisms the listener offers.

    >>> _handshake_answer(bytes.fromhex("0021 00000001 0005 504c41494e".replace(" ", "")))
    (33, ['PLAIN'])
    """
    (error, count) = struct.unpack_from(">hi", answer)
    mechanisms, offset = [], 6
    for _ in range(max(count, 0)):
        name, offset = _nullable_string(answer, offset)
        mechanisms.append(name or "")
    return error, mechanisms
