"""Private instances of the real brokers (Debian's packages), each on
loopback ports of its own with its config and data in a temp directory,
started in the background and stopped by pid. Each has a TLS listener too,
with certificates made by the test (``Pki``), and a user with a password."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
import cometbox_testing  # noqa: E402  (the repository's shared test support)


# Ports chosen before a broker binds them (below the ephemeral range), and
# whether the listener there is the broker's: the shared Python test support.
free_port = cometbox_testing.free_port
port_open = cometbox_testing.port_open


#: The password of every broker's test user (``USER``); bad-credential tests
#: use another.
USER = "cometbox"
PASSWORD = "s3cret-bridge-pw"


class Pki:
    """A private CA and a certificate for 127.0.0.1 (and only that: a URL
    naming ``localhost`` is a wrong server name), a client certificate, and
    another CA that signed nothing of ours (a wrong CA). Made with openssl;
    EC P-256 keys, fast to make."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pki"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self.other_ca = self.dir / "other-ca.pem"
        self.server_cert, self.server_key = self.dir / "server.pem", self.dir / "server.key"
        self.client_cert, self.client_key = self.dir / "client.pem", self.dir / "client.key"
        self.server_p12 = self.dir / "server.p12"
        self.p12_password = "changeit"
        self._ca("ca")
        self._ca("other-ca")
        self._leaf("server", "cometbox test broker", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        self._leaf("client", "cometbox test client", "extendedKeyUsage=clientAuth")
        # ActiveMQ (Java) reads its key and certificate from a PKCS#12 store.
        self._openssl("pkcs12", "-export", "-in", self.server_cert, "-inkey", self.server_key,
                      "-certfile", self.ca, "-name", "broker", "-out", self.server_p12,
                      "-passout", f"pass:{self.p12_password}")

    def _openssl(self, *args: object) -> None:
        run = subprocess.run(["openssl", *map(str, args)], cwd=self.dir, capture_output=True, timeout=60)
        if run.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {run.stderr.decode(errors='replace')}")

    def _key(self, name: str) -> None:
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")

    def _ca(self, name: str) -> None:
        self._key(name)
        self._openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN=cometbox test {name}",
                      "-days", "2", "-out", f"{name}.pem")

    def _leaf(self, name: str, cn: str, extensions: str) -> None:
        self._key(name)
        self._openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr")
        (self.dir / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + extensions + "\n")
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                      "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


class Broker:
    """One broker process; ``ports`` are waited for after a start."""

    name = "broker"

    def __init__(self, root: Path) -> None:
        self.dir = root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.dir / "broker.log"

    def command(self) -> List[str]:
        raise NotImplementedError

    def env(self) -> Dict[str, str]:
        return dict(os.environ)

    def ports(self) -> List[int]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.dir,
                env=self.env(),
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(port_open(p) and self.listens_on(p) for p in self.ports()):
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                state = ", ".join(
                    f"{p} {'ours' if self.listens_on(p) else 'open, not ours' if port_open(p) else 'closed'}"
                    for p in self.ports())
                raise RuntimeError(f"{self.name} did not open its ports in {timeout} s ({state}):\n{self.log()}")
            time.sleep(0.2)

    def listens_on(self, port: int) -> bool:
        """Whether the socket listening on ``port`` belongs to this broker's
        session (its process group), not to another test's process that
        took the port ``free_port`` handed out."""
        assert self.process is not None
        return cometbox_testing.listens_in_session(self.process.pid, port)

    def stop(self) -> None:
        """SIGTERM to our pid (its process group: a wrapper script's
        children), SIGKILL after 30 s; then wait for the ports to close."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        deadline = time.monotonic() + 30
        while any(port_open(p) for p in self.ports()) and time.monotonic() < deadline:
            time.sleep(0.2)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


class Redis(Broker):
    """Plain on ``port``; with a ``Pki``, TLS on ``tls_port`` too (client
    certificates checked when given) and an ACL user ``USER``."""

    name = "redis"

    def __init__(self, root: Path, pki: Optional[Pki] = None) -> None:
        super().__init__(root)
        self.port = free_port()
        self.pki = pki
        self.tls_port = free_port() if pki else 0

    def command(self) -> List[str]:
        # appendonly: a restart keeps the stream and its consumer group.
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                   "--save", "", "--appendonly", "yes", "--daemonize", "no"]
        if self.pki:
            p = self.pki
            command += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(p.server_cert),
                        "--tls-key-file", str(p.server_key), "--tls-ca-cert-file", str(p.ca),
                        "--tls-auth-clients", "optional",
                        "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"]
        return command

    def ports(self) -> List[int]:
        return [self.port] + ([self.tls_port] if self.pki else [])

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True, capture_output=True, timeout=30)
        return out.stdout.decode()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class Nats(Broker):
    name = "nats"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.port = free_port()

    def command(self) -> List[str]:
        return ["nats-server", "-a", "127.0.0.1", "-p", str(self.port)]

    def ports(self) -> List[int]:
        return [self.port]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsSecure(Broker):
    """nats-server with TLS only, a user and password, and JetStream (its
    store in the broker's directory, so a restart keeps streams)."""

    name = "nats-secure"

    def __init__(self, root: Path, pki: Pki) -> None:
        super().__init__(root)
        self.port = free_port()
        (self.dir / "nats.conf").write_text(f"""
listen: 127.0.0.1:{self.port}
tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}", ca_file: "{pki.ca}" }}
authorization {{ users = [ {{ user: "{USER}", password: "{PASSWORD}" }} ] }}
jetstream {{ store_dir: "{self.dir / 'jetstream'}" }}
""")

    def command(self) -> List[str]:
        return ["nats-server", "-c", str(self.dir / "nats.conf")]

    def ports(self) -> List[int]:
        return [self.port]

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"


class ActiveMQ(Broker):
    """ActiveMQ 5 with a persistent store, a STOMP connector and a
    ``stomp+ssl`` one (the form Amazon MQ offers)."""

    name = "activemq"

    def __init__(self, root: Path, pki: Pki) -> None:
        super().__init__(root)
        self.port = free_port()
        self.ssl_port = free_port()
        data = self.dir / "data"
        (self.dir / "conf").mkdir(exist_ok=True)
        (self.dir / "conf" / "activemq.xml").write_text(f"""<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="cometbox-test"
          dataDirectory="{data}" persistent="true">
    <persistenceAdapter><kahaDB directory="{data}/kahadb"/></persistenceAdapter>
    <sslContext>
      <sslContext keyStore="file:{pki.server_p12}" keyStorePassword="{pki.p12_password}" keyStoreType="pkcs12"/>
    </sslContext>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{self.port}"/>
      <transportConnector name="stomp+ssl" uri="stomp+ssl://127.0.0.1:{self.ssl_port}"/>
    </transportConnectors>
  </broker>
</beans>
""")

    def command(self) -> List[str]:
        d = str(self.dir)
        return ["java", "-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1",
                "-Dactivemq.home=/usr/share/activemq", f"-Dactivemq.base={d}", f"-Dactivemq.conf={d}/conf",
                f"-Dactivemq.data={d}/data", f"-Djava.io.tmpdir={d}",
                "-jar", "/usr/share/activemq/bin/activemq.jar", "start", f"xbean:file:{d}/conf/activemq.xml"]

    def ports(self) -> List[int]:
        return [self.port, self.ssl_port]

    @property
    def url(self) -> str:
        return f"stomp://127.0.0.1:{self.port}"


class RabbitMQ(Broker):
    """RabbitMQ (AMQP, and STOMP through its plugin) with its own node name,
    mnesia and log dirs, ports, and an
    epmd of its own (started here, in the foreground, so it has a pid)."""

    name = "rabbitmq"

    def __init__(self, root: Path, pki: Pki) -> None:
        super().__init__(root)
        self.port = free_port()
        self.stomp_port = free_port()
        self.ssl_port = free_port()
        self.stomp_ssl_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        # amqps and STOMP over TLS (Amazon MQ's forms) beside the plain
        # listeners; a client certificate is checked when one is offered.
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"listeners.ssl.default = 127.0.0.1:{self.ssl_port}\n"
            f"stomp.listeners.tcp.1 = 127.0.0.1:{self.stomp_port}\n"
            f"stomp.listeners.ssl.1 = 127.0.0.1:{self.stomp_ssl_port}\n"
            f"ssl_options.cacertfile = {pki.ca}\n"
            f"ssl_options.certfile = {pki.server_cert}\n"
            f"ssl_options.keyfile = {pki.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            "loopback_users = none\n"
            "log.console = true\nlog.file = false\n"
        )
        # The STOMP plugin: the STOMP bridge is tested against RabbitMQ too.
        (self.dir / "enabled_plugins").write_text("[rabbitmq_stomp].\n")
        self.epmd: Optional[subprocess.Popen[bytes]] = None

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        d = str(self.dir)
        env.update({
            "HOME": d,
            "RABBITMQ_NODENAME": "cometbox-test@localhost",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_PID_FILE": f"{d}/rabbit.pid",
        })
        return env

    def command(self) -> List[str]:
        return ["/usr/lib/rabbitmq/bin/rabbitmq-server"]

    def start(self) -> None:
        if self.epmd is None or self.epmd.poll() is not None:
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            self.epmd = subprocess.Popen(
                [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=self.env(), start_new_session=True,
            )
        super().start()

    def ports(self) -> List[int]:
        return [self.port, self.stomp_port, self.ssl_port, self.stomp_ssl_port]

    def stop_epmd(self) -> None:
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(10)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
