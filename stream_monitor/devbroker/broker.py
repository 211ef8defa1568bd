"""Run a local single-node Kafka 4.x broker (KRaft) built from Maven Central jars.

The jars are fetched once with Maven into ``<home>/<version>/libs``. The broker runs
detached in its own session and is tracked through a pid file, so ``start``, ``stop``
and ``status`` work across processes (CLI, tests, notebooks).

Layout under ``home`` (default ``~/.cache/stream-monitor/kafka``)::

    <version>/pom.xml, <version>/libs/*.jar, <version>/libs/.complete
    data-<port>/kafka-logs/          default data (log.dirs)
    logs-<port>/broker.out           JVM stdout/stderr (WARN and above)
    logs-<port>/server.log           Kafka INFO log (size capped)
    logs-<port>/server.properties    rendered config
    logs-<port>/broker.pid           pid of the running broker
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from stream_monitor.devbroker.security import (
    DEV_USERS,
    SCRAM_MECHANISM,
    SUPER_USER,
    DevCredentials,
    SecurityError,
)

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
CACHE_ENV = "STREAM_MONITOR_CACHE"
HOST = "127.0.0.1"
MIN_JAVA = 17

_PACKAGE_DIR = Path(__file__).resolve().parent
POM_FILE = _PACKAGE_DIR / "pom.xml"
LOG4J_CONFIG = _PACKAGE_DIR / "log4j2.yaml"

_COMPLETE_MARKER = ".complete"
_TAIL_LINES = 30
_TOOL_TIMEOUT = 180.0
_MAVEN_TIMEOUT = 1800.0
_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')

# Brokers started by this process, so they can be waited on (no zombies, no
# ResourceWarning from a collected Popen).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


def default_cache_dir() -> Path:
    """Return ``$STREAM_MONITOR_CACHE`` or ``~/.cache/stream-monitor``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stream-monitor"


def default_java() -> str | None:
    """Return ``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def _default_home() -> Path:
    return default_cache_dir() / "kafka"


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how the local broker runs; derived paths are properties."""

    port: int = 9092
    controller_port: int | None = None
    home: Path = field(default_factory=_default_home)
    kafka_version: str = KAFKA_VERSION
    heap: str = "512m"
    java: str | None = field(default_factory=default_java)
    security: Literal["plaintext", "sasl_ssl"] = "plaintext"
    """``sasl_ssl``: the client port is a SASL_SSL listener (SCRAM users, TLS with a
    development CA) and ACLs are enforced (``StandardAuthorizer``)."""
    mtls_port: int | None = None
    """With ``sasl_ssl``: also an SSL listener here that requires client certificates."""
    security_dir: Path | None = None
    """Where the secured broker's credentials live; default ``<home>/security-<port>``."""

    def __post_init__(self) -> None:
        """Validate ports and heap, normalise ``home``."""
        object.__setattr__(self, "home", Path(self.home).expanduser())
        ports = {"port": self.port, "controller_port": self.quorum_port}
        if self.mtls_port is not None:
            if self.security != "sasl_ssl":
                raise ValueError("mtls_port needs security 'sasl_ssl'")
            ports["mtls_port"] = self.mtls_port
        for name, value in ports.items():
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {value}")
        if len(set(ports.values())) < len(ports):
            raise ValueError(f"the ports must differ: {ports}")
        if not _HEAP_RE.match(self.heap):
            raise ValueError(f"heap must look like '512m' or '1g', got {self.heap!r}")

    @property
    def quorum_port(self) -> int:
        """Controller (KRaft quorum) port: ``controller_port`` or ``port + 1``."""
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def bootstrap_servers(self) -> str:
        """Client bootstrap address, ``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    @property
    def version_dir(self) -> Path:
        """``<home>/<kafka_version>``: the pom and the jars."""
        return self.home / self.kafka_version

    @property
    def libs_dir(self) -> Path:
        """Directory of broker jars (``-cp 'libs/*'``)."""
        return self.version_dir / "libs"

    @property
    def default_data_dir(self) -> Path:
        """Data directory used when none is given: ``<home>/data-<port>``."""
        return self.home / f"data-{self.port}"

    @property
    def run_dir(self) -> Path:
        """``<home>/logs-<port>``: logs, rendered config and pid file."""
        return self.home / f"logs-{self.port}"

    @property
    def pid_file(self) -> Path:
        """Pid file of the broker on this port."""
        return self.run_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        """Rendered ``server.properties``."""
        return self.run_dir / "server.properties"

    @property
    def broker_out(self) -> Path:
        """JVM stdout/stderr of the broker."""
        return self.run_dir / "broker.out"

    @property
    def credentials(self) -> DevCredentials:
        """The secured broker's CA, certificates and users: ``<home>/security-<port>``."""
        return DevCredentials(self.security_dir or self.home / f"security-{self.port}")

    def admin_client_config(self) -> dict[str, Any]:
        """kafka-python settings for a client of this broker with every right."""
        if self.security == "plaintext":
            return {"bootstrap_servers": self.bootstrap_servers}
        credentials = self.credentials
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "ssl_cafile": str(credentials.ca_file),
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": SUPER_USER,
            "sasl_plain_password": credentials.password(SUPER_USER),
        }


@dataclass(frozen=True)
class LocalBroker:
    """A running local broker."""

    bootstrap_servers: str
    pid: int
    settings: BrokerSettings

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop this broker; see :func:`stop`."""
        return stop(self.settings, timeout=timeout)


# --------------------------------------------------------------------------- config


def kafka_log_dir(data_dir: Path) -> Path:
    """Return the Kafka ``log.dirs`` directory inside ``data_dir``."""
    return Path(data_dir).expanduser().absolute() / "kafka-logs"


def _prop_value(value: str) -> str:
    return value.replace("\\", "\\\\")


def render_server_properties(settings: BrokerSettings, data_dir: Path) -> str:
    """Render ``server.properties`` for a single-node KRaft broker+controller."""
    port, cport = settings.port, settings.quorum_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{cport}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": _prop_value(str(kafka_log_dir(data_dir))),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        # Records carry event time, and the simulated streams start on 2026-01-01: with the
        # default 7-day retention the broker deleted their outputs at its next check.
        "log.retention.ms": "-1",
    }
    if settings.security == "sasl_ssl":
        props.update(_secured_properties(settings))
    lines = [
        "# Generated by stream_monitor.devbroker: single-node KRaft dev broker.",
        *(f"{key}={value}" for key, value in props.items()),
    ]
    return "\n".join(lines) + "\n"


def _secured_properties(settings: BrokerSettings) -> dict[str, str]:
    """The SASL_SSL listener (and the mutual TLS one), SCRAM, TLS and ACLs."""
    port, cport, credentials = settings.port, settings.quorum_port, settings.credentials
    listeners = [f"SASL_SSL://{HOST}:{port}"]
    if settings.mtls_port is not None:
        listeners.append(f"MTLS://{HOST}:{settings.mtls_port}")
    users = ";".join(f"User:{user}" for user in (SUPER_USER, "ANONYMOUS"))
    return {
        "listeners": ",".join([*listeners, f"CONTROLLER://{HOST}:{cport}"]),
        "advertised.listeners": ",".join(listeners),
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{SUPER_USER}" password="{credentials.password(SUPER_USER)}";'
        ),
        "listener.name.mtls.ssl.client.auth": "required",
        # A client certificate's CN=monitor is the principal User:monitor.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": _prop_value(str(credentials.keystore)),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": _prop_value(str(credentials.ca_file)),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS: the principal of the plaintext controller listener.
        "super.users": users,
        "allow.everyone.if.no.acl.found": "false",
        "auto.create.topics.enable": "false",
    }


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (serialises concurrent callers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _require_java(settings: BrokerSettings) -> str:
    """Return a usable java executable (17+) or raise :class:`BrokerError`."""
    java = settings.java or default_java()
    hint = "Install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
    if java is None:
        raise BrokerError(f"java not found: {hint}, or set JAVA_HOME.")
    resolved = shutil.which(java)
    if resolved is None:
        raise BrokerError(f"java executable {java!r} not found or not executable: {hint}.")
    try:
        proc = subprocess.run(
            [resolved, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run {resolved} -version: {exc}") from exc
    match = _JAVA_VERSION_RE.search(proc.stderr + proc.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise BrokerError(
                f"Kafka 4 needs Java {MIN_JAVA}+, {resolved} is Java {major}: {hint}."
            )
    return resolved


def _require_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) not found on PATH; it is needed once to fetch the Kafka jars "
            "from Maven Central. Install Maven 3.6+ (e.g. `apt-get install maven`)."
        )
    return mvn


def _import_kafka() -> ModuleType:
    try:
        return importlib.import_module("kafka")
    except ImportError as exc:
        raise BrokerError(
            "kafka-python is needed to check that the broker is ready: "
            "`pip install 'kafka-python>=3'`."
        ) from exc


@contextlib.contextmanager
def _quiet_kafka_client_logs() -> Iterator[None]:
    """Silence kafka-python's expected connection errors while probing."""
    client_logger = logging.getLogger("kafka")
    previous = client_logger.level
    client_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_logger.setLevel(previous)


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_answers(kafka: ModuleType, client: dict[str, Any], timeout: float) -> bool:
    """True if a Kafka broker answers ApiVersions + Metadata to a client of ``client``."""
    timeout_ms = max(int(timeout * 1000), 1000)
    with _quiet_kafka_client_logs():
        try:
            admin = kafka.KafkaAdminClient(
                **client,
                client_id="stream-monitor-devbroker-probe",
                bootstrap_timeout_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
            )
        except Exception:  # any failure means "not ready yet"
            return False
        try:
            admin.list_topics()
        except Exception:
            return False
        else:
            return True
        finally:
            admin.close()


def _cmdline(pid: int) -> list[str] | None:
    """Command line of ``pid`` from /proc, or None where /proc is unavailable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return [] if not Path("/proc/self").exists() else None
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


def _pid_alive(pid: int, settings: BrokerSettings) -> bool:
    """True if ``pid`` is a live broker started with this settings' config."""
    child = _CHILDREN.get(pid)
    if child is not None:  # reaped by poll(); callers drop it from _CHILDREN
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    args = _cmdline(pid)
    if args is None:
        return False
    if not args:  # no /proc (not Linux): trust the pid
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return "kafka.Kafka" in args and str(settings.properties_file) in args


def _read_pid(settings: BrokerSettings) -> int | None:
    try:
        return int(settings.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_exit(pid: int, settings: BrokerSettings, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit; True if it did."""
    child = _CHILDREN.get(pid)
    if child is not None:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        _CHILDREN.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, settings):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _log_dirs_of(settings: BrokerSettings) -> str | None:
    try:
        text = settings.properties_file.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("log.dirs="):
            return line.partition("=")[2].replace("\\\\", "\\")
    return None


# --------------------------------------------------------------------------- public API


def ensure_libs(settings: BrokerSettings) -> Path:
    """Fetch the broker jars once into ``<home>/<version>/libs`` and return that dir."""
    libs = settings.libs_dir
    marker = libs / _COMPLETE_MARKER
    if marker.exists():
        return libs
    _require_java(settings)
    mvn = _require_mvn()
    settings.version_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(settings.version_dir / ".lock"):
        if marker.exists():  # another process finished while we waited
            return libs
        if libs.exists():  # leftover of an interrupted download
            shutil.rmtree(libs)
        pom = settings.version_dir / "pom.xml"
        shutil.copyfile(POM_FILE, pom)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-U",  # re-try artifacts whose earlier download failed
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            f"-Dkafka.version={settings.kafka_version}",
        ]
        logger.info("Fetching Kafka %s jars with Maven into %s", settings.kafka_version, libs)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"Maven did not finish in {_MAVEN_TIMEOUT:.0f} s: {cmd}") from exc
        if proc.returncode != 0:
            output = _ANSI_RE.sub("", proc.stdout + proc.stderr)
            output = "\n".join(output.splitlines()[-_TAIL_LINES:])
            raise BrokerError(
                f"Maven failed (exit {proc.returncode}) fetching Kafka "
                f"{settings.kafka_version} jars:\n{output}"
            )
        kafka_jar = libs / f"kafka_2.13-{settings.kafka_version}.jar"
        if not kafka_jar.exists():
            raise BrokerError(f"Maven succeeded but {kafka_jar} is missing")
        marker.write_text(f"kafka {settings.kafka_version}\n")
        logger.info("Kafka jars ready in %.1f s", time.monotonic() - started)
    return libs


def find_running(settings: BrokerSettings) -> LocalBroker | None:
    """Return the broker recorded in the pid file if its process is alive."""
    pid = _read_pid(settings)
    if pid is None:
        return None
    if not _pid_alive(pid, settings):
        _CHILDREN.pop(pid, None)
        return None
    return LocalBroker(settings.bootstrap_servers, pid, settings)


def _run_tool(settings: BrokerSettings, java: str, libs: Path, args: Sequence[str]) -> str:
    cmd = [
        java,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={settings.run_dir}",
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        *args,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"StorageTool {args[0]} timed out") from exc
    if proc.returncode != 0:
        raise BrokerError(
            # args[0] only: the others may hold the users' passwords.
            f"StorageTool {args[0]} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


_SECURITY_MARKER = "stream-monitor-security"


def _format_storage(settings: BrokerSettings, java: str, libs: Path, data_dir: Path) -> None:
    marker = kafka_log_dir(data_dir) / _SECURITY_MARKER
    if (kafka_log_dir(data_dir) / "meta.properties").exists():
        formatted = marker.read_text().strip() if marker.exists() else "plaintext"
        if formatted != settings.security:
            raise BrokerError(
                f"{kafka_log_dir(data_dir)} was formatted for a {formatted} broker, not "
                f"{settings.security} (its users are made at format time): add --fresh"
            )
        return
    lines = _run_tool(settings, java, libs, ["random-uuid"]).split()
    if not lines:
        raise BrokerError("StorageTool random-uuid printed nothing")
    cluster_id = lines[-1]
    users = settings.credentials.scram_arguments() if settings.security == "sasl_ssl" else []
    _run_tool(
        settings,
        java,
        libs,
        ["format", "-t", cluster_id, "-c", str(settings.properties_file), *users],
    )
    marker.write_text(f"{settings.security}\n")
    logger.info("Formatted %s (cluster id %s)", kafka_log_dir(data_dir), cluster_id)


def _wait_ready(settings: BrokerSettings, pid: int, deadline: float, kafka: ModuleType) -> None:
    """Poll until the broker answers Kafka requests; raise if it dies or times out."""
    while True:
        if not _pid_alive(pid, settings):
            child = _CHILDREN.pop(pid, None)
            code = child.returncode if child is not None else "?"
            raise BrokerError(
                f"Kafka broker (pid {pid}) exited with code {code} during start-up; "
                f"last lines of {settings.broker_out}:\n{_tail(settings.broker_out)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if _port_open(settings.port) and _kafka_answers(
            kafka, settings.admin_client_config(), min(remaining, 10.0)
        ):
            return
        time.sleep(0.25)
    _kill(pid, settings, grace=5.0)
    with contextlib.suppress(FileNotFoundError):
        settings.pid_file.unlink()
    raise BrokerError(
        f"Kafka broker on {settings.bootstrap_servers} was not ready in time and was "
        f"killed; last lines of {settings.broker_out}:\n{_tail(settings.broker_out)}"
    )


def _kill(pid: int, settings: BrokerSettings, grace: float) -> None:
    """SIGTERM ``pid``, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, settings, grace):
        return
    logger.warning("Broker pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, grace)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_exit(pid, settings, 10.0):
        raise BrokerError(f"broker pid {pid} survived SIGKILL")


def start(
    settings: BrokerSettings,
    data_dir: Path | None = None,
    timeout: float = 90,
    *,
    fresh: bool = False,
) -> LocalBroker:
    """Start the broker (or return the one already running) and wait until it answers.

    ``fresh`` stops a running broker on this port and wipes the Kafka data
    (``<data_dir>/kafka-logs``) before starting.
    ``timeout`` bounds the wait for readiness; the one-time jar download and
    storage formatting come on top of it.
    """
    started = time.monotonic()
    kafka = _import_kafka()
    data_dir = Path(data_dir).expanduser().absolute() if data_dir else settings.default_data_dir
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(settings.run_dir / ".lock"):
        running = find_running(settings)
        if running is not None and fresh:
            logger.info("--fresh: stopping broker pid %d first", running.pid)
            stop(settings)
            running = None
        if running is not None:
            log_dirs = _log_dirs_of(settings)
            if log_dirs is not None and log_dirs != str(kafka_log_dir(data_dir)):
                logger.warning(
                    "Broker already running with log.dirs=%s (not %s)", log_dirs, data_dir
                )
            _wait_ready(settings, running.pid, time.monotonic() + timeout, kafka)
            logger.info("Kafka broker already running: pid %d", running.pid)
            return running
        with contextlib.suppress(FileNotFoundError):
            settings.pid_file.unlink()
        for name, port in (("port", settings.port), ("controller port", settings.quorum_port)):
            if _port_open(port):
                raise BrokerError(
                    f"{name} {port} on {HOST} is already in use by a process that is not "
                    f"a devbroker started from {settings.home}; pick another --port"
                )
        if fresh and kafka_log_dir(data_dir).exists():
            logger.info("--fresh: wiping %s", kafka_log_dir(data_dir))
            shutil.rmtree(kafka_log_dir(data_dir))
        libs = ensure_libs(settings)
        java = _require_java(settings)
        if settings.security == "sasl_ssl":
            try:
                settings.credentials.ensure(settings.bootstrap_servers)
            except SecurityError as exc:
                raise BrokerError(str(exc)) from None
        settings.properties_file.write_text(render_server_properties(settings, data_dir))
        _format_storage(settings, java, libs, data_dir)
        cmd = [
            java,
            f"-Xmx{settings.heap}",
            f"-Xms{settings.heap}",
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={settings.run_dir}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(settings.properties_file),
        ]
        launched = time.monotonic()
        with settings.broker_out.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=settings.run_dir,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        settings.pid_file.write_text(f"{proc.pid}\n")
        logger.info("Started Kafka broker pid %d on %s", proc.pid, settings.bootstrap_servers)
        _wait_ready(settings, proc.pid, launched + timeout, kafka)
        now = time.monotonic()
        logger.info(
            "Kafka broker ready on %s in %.1f s (JVM launch to ready %.1f s)",
            settings.bootstrap_servers,
            now - started,
            now - launched,
        )
        return LocalBroker(settings.bootstrap_servers, proc.pid, settings)


def stop(settings: BrokerSettings, timeout: float = 30) -> bool:
    """Stop the broker on ``settings.port``: SIGTERM, SIGKILL after ``timeout``.

    Returns True if a broker was running.
    """
    running = find_running(settings)
    if running is None:
        with contextlib.suppress(FileNotFoundError):
            settings.pid_file.unlink()
        return False
    logger.info("Stopping Kafka broker pid %d", running.pid)
    _kill(running.pid, settings, grace=timeout)
    with contextlib.suppress(FileNotFoundError):
        settings.pid_file.unlink()
    return True


def status(settings: BrokerSettings) -> str:
    """One-line human-readable status of the broker on ``settings.port``."""
    running = find_running(settings)
    if running is not None:
        state = "ready" if _port_open(settings.port) else "starting"
        return (
            f"running ({state}): pid {running.pid}, bootstrap {running.bootstrap_servers}, "
            f"log.dirs {_log_dirs_of(settings)}, logs {settings.run_dir}"
        )
    if _port_open(settings.port):
        return f"not running from {settings.home}, but port {settings.port} is in use"
    return f"not running (port {settings.port})"


def grant_service_acls(settings: BrokerSettings) -> None:
    """Give the users monitor, trainer and serving the ACLs their services need
    (:mod:`stream_monitor.kafka.acls`) on the default topic names and groups, topic
    creation included."""
    from stream_monitor.config import KafkaSettings, TopicSettings
    from stream_monitor.kafka import acls

    topics, admin = TopicSettings(), settings.admin_client_config()
    trainer_group = f"{KafkaSettings().group_id}-trainer"
    acls.grant(admin, "User:monitor", acls.monitor_grants(topics, KafkaSettings().group_id, True))
    acls.grant(admin, "User:trainer", acls.trainer_grants(topics, trainer_group, True))
    acls.grant(admin, "User:serving", acls.serving_grants(topics))


# --------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--port",
        type=int,
        default=9092,
        help="client port: PLAINTEXT, or SASL_SSL with --security (default: %(default)s)",
    )
    common.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: PORT+1)",
    )
    common.add_argument(
        "--home",
        type=Path,
        default=None,
        help=f"cache dir for jars, data and logs (default: ${CACHE_ENV}/kafka "
        "or ~/.cache/stream-monitor/kafka)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="only print errors")

    parser = argparse.ArgumentParser(
        prog="python -m stream_monitor.devbroker",
        description="Local single-node Kafka (KRaft) broker for development and tests. "
        "The first start downloads the Kafka jars from Maven Central with `mvn` "
        "(needs Java 17+ and Maven).",
        epilog="`start` prints the bootstrap servers on stdout, e.g. "
        "BOOTSTRAP=$(scripts/kafka-local start --port 19092). "
        "`status` exits 0 if running, 3 if not.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status}")
    p_start = sub.add_parser(
        "start", parents=[common], help="start the broker (no-op if already running)"
    )
    p_start.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory; Kafka logs go to DATA_DIR/kafka-logs (default: HOME/data-PORT)",
    )
    p_start.add_argument(
        "--fresh",
        action="store_true",
        help="stop a running broker and wipe DATA_DIR/kafka-logs before starting",
    )
    p_start.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the broker to be ready (default: %(default)s)",
    )
    p_start.add_argument(
        "--security",
        choices=("plaintext", "sasl_ssl"),
        default="plaintext",
        help="sasl_ssl: TLS with a throwaway CA, SCRAM users "
        f"({', '.join(DEV_USERS)}) and ACLs: each service user gets what it needs on the "
        "default topic names; credentials and STREAM_MONITOR_KAFKA__* files in "
        "HOME/security-PORT (default: %(default)s)",
    )
    p_start.add_argument(
        "--mtls-port",
        type=int,
        default=None,
        help="with --security sasl_ssl: also a TLS listener here that requires client "
        "certificates (HOME/security-PORT/<user>.pem)",
    )
    p_stop = sub.add_parser("stop", parents=[common], help="stop the broker")
    p_stop.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait after SIGTERM before SIGKILL (default: %(default)s)",
    )
    sub.add_parser("status", parents=[common], help="show whether the broker is running")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``start|stop|status [--port N] [--data-dir D] [--fresh]``."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.ERROR if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)  # every connection at INFO
    try:
        settings = BrokerSettings(
            port=args.port,
            controller_port=args.controller_port,
            home=args.home if args.home is not None else _default_home(),
            security=getattr(args, "security", "plaintext"),
            mtls_port=getattr(args, "mtls_port", None),
        )
        if args.command == "start":
            broker = start(settings, args.data_dir, args.timeout, fresh=args.fresh)
            if settings.security == "sasl_ssl":
                grant_service_acls(settings)
                logger.info(
                    "Secured broker: a service connects as USER with the variables in %s",
                    settings.credentials.env_file("USER"),
                )
            print(broker.bootstrap_servers)
            return 0
        if args.command == "stop":
            was_running = stop(settings, args.timeout)
            print("stopped" if was_running else "not running")
            return 0
        print(status(settings))
        return 0 if find_running(settings) is not None else 3
    except (BrokerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
