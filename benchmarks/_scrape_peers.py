"""The servers benchmarks/scrape.py compares, each in a process of its own, and their settings.

- ``pqd run`` (default probe, ``--interval 1h``, first cycle done), TLS through an
  exporter-toolkit web config (``--web-config-file``);
- prometheus_client's own ``start_http_server`` serving the registry pqd builds
  (benchmarks/_stock_server.py), listen backlog raised to 1024, and as shipped (backlog 5); TLS
  through its ``certfile``/``keyfile``;
- Debian's prometheus-node-exporter on a free port, TLS through the same web config file.

Imported by the script only (standard library at module level).
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import _common as c

NODE_EXPORTER = c.NODE_EXPORTER
WRK = "wrk"
#: node_exporter's collectors: its defaults read much of /proc and /sys on every scrape; these
#: few keep the work and the body close to pqd's (its own families plus process_*/python_*:
#: node_exporter adds go_*, process_*, promhttp_* on its own).
NODE_COLLECTORS = ("--collector.disable-defaults", "--collector.loadavg", "--collector.meminfo")
#: node_exporter answers 503 "Limit of concurrent requests reached" beyond 40 scrapes in flight
#: (``--web.max-requests``). The limit is off (0), as prometheus_client's backlog is raised: a
#: limit of 100 still answered tens of thousands of 503s to 50 clients, because a handler is
#: still in flight after its client has read the response and reconnected.
NODE_LIMITS = ("--web.max-requests=0",)
STOCK_BACKLOG = 1024


@dataclass(frozen=True)
class Server:
    name: str  # e.g. "pqd", "prometheus_client (backlog 1024)"
    tls: bool
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/metrics"

    @property
    def label(self) -> str:
        return f"{self.name} {'TLS' if self.tls else 'plain'}"


@dataclass(frozen=True)
class Certs:
    cert: Path
    key: Path
    web_config: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def require_tools() -> None:
    """Fail clearly when a peer or the load generator is missing (``make test`` installs them)."""
    missing = [
        name
        for name, found in (
            ("wrk", shutil.which(WRK)),
            ("prometheus-node-exporter", Path(NODE_EXPORTER).exists()),
            ("openssl", shutil.which("openssl")),
        )
        if not found
    ]
    if missing:
        raise SystemExit(
            f"scrape.py needs {', '.join(missing)}: apt-get install -y wrk "
            "prometheus-node-exporter openssl (or `make system-deps`)"
        )


def make_certs(directory: Path) -> Certs:
    """A self-signed certificate for 127.0.0.1 and an exporter-toolkit web config using it."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    web_config = directory / "web-config.yml"
    web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    return Certs(cert, key, web_config)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def stock_server(tls: bool, backlog: int | None, certs: Certs) -> Iterator[Server]:
    """prometheus_client's server; ``backlog=None`` is as shipped (5)."""
    extra = ["--certfile", str(certs.cert), "--keyfile", str(certs.key)] if tls else []
    if backlog is not None:
        extra += ["--backlog", str(backlog)]
    # Its stderr (a traceback per client that hangs up mid-response, as wrk does when a round
    # ends) goes to a file, shown only if it does not start.
    log = certs.cert.parent / f"stock-{'tls' if tls else 'plain'}-{backlog}.log"
    with log.open("w+") as err:
        proc, fields = c.start_stock_server(extra, err)
    try:
        shown = f"backlog {fields['backlog']}" + ("" if backlog else ", as shipped")
        yield Server(f"prometheus_client ({shown})", tls, int(fields["port"]), proc.pid)
    finally:
        _stop(proc)


@contextlib.contextmanager
def pqd_server(tls: bool, certs: Certs) -> Iterator[Server]:
    flags = ["--interval", "1h"]
    if tls:
        flags += ["--web-config-file", str(certs.web_config)]
    with c.daemon(flags) as d:
        d.wait_cycles(1, 60)
        yield Server("pqd", tls, d.port, d.pid)


@contextlib.contextmanager
def node_exporter(tls: bool, certs: Certs) -> Iterator[Server]:
    port = c.free_port()
    flags = [*NODE_COLLECTORS, *NODE_LIMITS]
    if tls:
        flags.append(f"--web.config.file={certs.web_config}")
    with c.node_exporter(port, flags) as proc:
        yield Server("node_exporter", tls, port, proc.pid)


def start_all(stack: contextlib.ExitStack, certs: Certs) -> list[Server]:
    """Every server, plain and TLS, all running at once (idle but for the one being loaded)."""
    found = []
    for tls in (False, True):
        found.append(stack.enter_context(pqd_server(tls, certs)))
        found.append(stack.enter_context(stock_server(tls, STOCK_BACKLOG, certs)))
        found.append(stack.enter_context(stock_server(tls, None, certs)))
        found.append(stack.enter_context(node_exporter(tls, certs)))
    return found


def listen_backlog(port: int) -> str:
    """The listening socket's backlog as the kernel reports it (``ss``'s Send-Q for LISTEN)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out[2] if len(out) >= 3 else "?"


def settings_lines(servers: Sequence[Server]) -> list[str]:
    """What each peer runs with, printed at the top of the output."""
    version = subprocess.run(
        [NODE_EXPORTER, "--version"], capture_output=True, text=True, check=False
    )
    node_version = (version.stdout or version.stderr).splitlines()[0]
    wrk_version = subprocess.run([WRK, "-v"], capture_output=True, text=True, check=False)
    lines = [
        "pqd: `pqd run --interval 1h` (default probe, first cycle done); "
        "TLS: --web-config-file (exporter-toolkit format, self-signed RSA 2048)",
        "prometheus_client: start_http_server (ThreadingWSGIServer, HTTP/1.0: closes every "
        f"connection) on pqd's registry; backlog raised to {STOCK_BACKLOG} via "
        "ThreadingWSGIServer.request_queue_size, and as shipped (5); TLS: certfile/keyfile "
        "(handshake in the accepting thread, as shipped)",
        f"node_exporter: {node_version}, {NODE_EXPORTER} "
        f"{' '.join(NODE_COLLECTORS)} (trimmed: defaults disabled) {' '.join(NODE_LIMITS)} "
        "(no limit on scrapes in flight; the default, 40, answers 503 beyond), "
        "TLS: --web.config.file (same file as pqd's)",
        f"load generator: this process (Python http.client) and "
        f"{(wrk_version.stdout or wrk_version.stderr).split(' [')[0].strip()} (Debian), "
        "outside every server's process",
    ]
    for s in servers:
        lines.append(f"  {s.label}: pid {s.pid}, {s.url}, listen backlog {listen_backlog(s.port)}")
    return lines
