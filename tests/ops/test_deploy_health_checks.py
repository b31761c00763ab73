"""The container image's HEALTHCHECK and the DaemonSet's probes, under each kind of web config.

The HEALTHCHECK command is taken out of deploy/Dockerfile as Docker reads it (continuation lines
joined, CMD parsed as a JSON array, or Docker would run it through a shell) and run against
pqd's own HTTP server on 127.0.0.1: plain, TLS, basic auth, a client certificate required. The
probes are checked against the web config the shipped pod reads: the scheme has to follow it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import bcrypt
import pytest
import yaml

from pqd.http.auth import AUTH_EXEMPT_PATHS
from pqd.http.server import HttpServer
from tests.helpers.ops import KUBERNETES_DIR, ROOT, load_yaml_documents
from tests.helpers.tls import make_ca, make_leaf

DOCKERFILE = ROOT / "deploy/Dockerfile"
COMPOSE_FILE = ROOT / "deploy/docker-compose.yml"
IMAGE_PORT = 10029  # the port the HEALTHCHECK asks, pqd's default
DEADLINE = 30.0  # seconds a HEALTHCHECK run may take before the test fails


# --- the Dockerfile's HEALTHCHECK -----------------------------------------------------------


def dockerfile_instructions(text: str) -> list[str]:
    """The instructions as Docker's parser sees them: comment lines dropped (inside a
    continuation too) and a line ending in a backslash joined with the next."""
    instructions: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        instructions.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its command's argv."""
    found = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    (instruction,) = [i for i in found if re.match(r"HEALTHCHECK\s", i)]
    head, cmd, command = instruction.partition(" CMD ")
    assert cmd, instruction
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", head))
    # Anything but a JSON array of strings is shell form: /bin/sh -c with the text as written.
    argv = json.loads(command)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
    return options, argv


def healthcheck_code(port: int) -> str:
    _, argv = healthcheck()
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, argv
    code = argv[2]
    # Both attempts, plain and https, ask the image's port.
    assert code.count(f", {IMAGE_PORT},") == 2, code
    return code.replace(f", {IMAGE_PORT},", f", {port},")


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", healthcheck_code(port)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def test_healthcheck_is_exec_form_and_fits_its_timeout() -> None:
    options, argv = healthcheck()
    assert argv[0] == "python", "the slim image has python, not curl"
    compile(argv[2], "<HEALTHCHECK>", "exec")
    attempts = [float(t) for t in re.findall(r"timeout=(\d+(?:\.\d+)?)", argv[2])]
    assert len(attempts) == 2, "a plain attempt and an https one, each with a timeout"
    timeout = options["timeout"]
    assert timeout.endswith("s") and timeout[:-1].isdigit(), timeout
    # Docker kills a check that overruns and counts a failure; ours must say why first.
    assert sum(attempts) < int(timeout[:-1]), (attempts, timeout)


class Health:
    """A stand-in for pqd's app: /-/healthy answers `status`, everything else 200."""

    def __init__(self) -> None:
        self.status = "200 OK"
        self.seen: list[tuple[str, str]] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.seen.append((environ["wsgi.url_scheme"], environ["PATH_INFO"]))
        status = self.status if environ["PATH_INFO"] == "/-/healthy" else "200 OK"
        body = status.encode()
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
CLIENT_CERT = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
# bcrypt cost 4 keeps the test fast; the cost does not change what is tested.
USERS = "basic_auth_users:\n  prometheus: '{}'\n".format(
    bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
)

WEB_CONFIGS = {
    "plain": None,
    "basic-auth": USERS,
    "tls": TLS,
    "tls+basic-auth": TLS + USERS,
}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    ca = make_ca()
    make_leaf(ca, "localhost").write(tmp_path, "server")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    servers: list[HttpServer] = []

    def start(web_config: str | None) -> tuple[HttpServer, Health]:
        path = None
        if web_config is not None:
            path = tmp_path / "web.yml"
            path.write_text(web_config, encoding="utf-8")
        app = Health()
        server = HttpServer("127.0.0.1:0", app, web_config_file=None if path is None else str(path))
        server.start()
        servers.append(server)
        return server, app

    yield start
    for server in servers:
        server.stop()


def test_health_endpoints_are_exempt_from_basic_auth() -> None:
    # What lets the HEALTHCHECK and the kubelet go without credentials (src/pqd/http/server.py).
    assert {"/-/healthy", "/-/ready"} <= AUTH_EXEMPT_PATHS


@pytest.mark.parametrize("name", WEB_CONFIGS)
def test_healthcheck_passes_on_200(serve: Any, name: str) -> None:
    server, app = serve(WEB_CONFIGS[name])
    result = run_healthcheck(server.port)
    assert result.returncode == 0, result.stderr
    scheme = "https" if name.startswith("tls") else "http"
    assert (scheme, "/-/healthy") in app.seen


@pytest.mark.parametrize("name", WEB_CONFIGS)
def test_healthcheck_fails_on_503(serve: Any, name: str) -> None:
    server, app = serve(WEB_CONFIGS[name])
    app.status = "503 Service Unavailable"
    result = run_healthcheck(server.port)
    assert result.returncode != 0
    # The answer came from the app over the right scheme, not from a failed fallback.
    assert "answered 503" in result.stderr, result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
        result = run_healthcheck(sock.getsockname()[1])
    assert result.returncode != 0
    assert "ConnectionRefusedError" in result.stderr, result.stderr


def test_healthcheck_cannot_pass_when_a_client_certificate_is_required(serve: Any) -> None:
    # The documented limit (Dockerfile, README): a client without a certificate cannot
    # complete TLS here, so the check fails even though pqd is healthy; override it.
    server, app = serve(TLS + CLIENT_CERT + USERS)
    result = run_healthcheck(server.port)
    assert result.returncode != 0
    assert ("https", "/-/healthy") not in app.seen


def tcp_check_code(port: int) -> str:
    """The TCP check deploy/docker-compose.yml offers, commented out, for that case."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    (line,) = re.findall(r"^\s*#\s+test: (\[.*\])$", text, re.MULTILINE)
    argv = json.loads(line)
    assert argv[:3] == ["CMD", "python", "-c"] and len(argv) == 4, argv
    assert argv[3].count(f", {IMAGE_PORT})") == 1, argv[3]
    return argv[3].replace(f", {IMAGE_PORT})", f", {port})")


def test_compose_tcp_check_works_where_the_healthcheck_cannot(serve: Any) -> None:
    server, _ = serve(TLS + CLIENT_CERT)
    code = tcp_check_code(server.port)
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=DEADLINE)
    assert ok.returncode == 0, ok.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        code = tcp_check_code(sock.getsockname()[1])
        refused = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=DEADLINE
        )
    assert refused.returncode != 0


# --- the DaemonSet's probes ------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    return [
        doc for path in sorted(KUBERNETES_DIR.glob("*.yaml")) for doc in load_yaml_documents(path)
    ]


def pod_web_config(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The web config the DaemonSet's pqd reads, or None when it reads none. Found the way pqd
    finds it: --web-config-file, else PQD_WEB_CONFIG_FILE, else web_config_file in the config
    file the pod is given, whose text comes from the ConfigMap or Secret that carries it."""
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]

    def file_text(path: str) -> str:
        name = Path(path).name
        for doc in docs:
            if doc["kind"] in {"ConfigMap", "Secret"}:
                data = doc.get("data" if doc["kind"] == "ConfigMap" else "stringData") or {}
                if name in data:
                    return str(data[name])
        pytest.fail(f"the pod reads {path}, which no manifest in {KUBERNETES_DIR} carries")

    args = [str(a) for a in container.get("args", [])]
    flags = dict(itertools.pairwise(args))
    flags |= dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    path = flags.get("--web-config-file") or env.get("PQD_WEB_CONFIG_FILE")
    if path is None:
        config = tomllib.loads(file_text(flags.get("--config", "/etc/pqd/pqd.toml")))
        path = config.get("web_config_file")
    if path is None:
        return None
    return yaml.safe_load(file_text(path)) or {}


def expected_probe_scheme(web_config: dict[str, Any] | None) -> str | None:
    """HTTP or HTTPS for an httpGet probe, or None where the kubelet cannot use one."""
    tls = (web_config or {}).get("tls_server_config")
    if not tls:
        return "HTTP"  # basic auth alone needs nothing: the health endpoints are exempt
    if tls.get("client_auth_type") in {"RequireAndVerifyClientCert", "RequireAnyClientCert"}:
        return None  # the kubelet sends no client certificate
    return "HTTPS"  # the kubelet does not verify the certificate


def probe_problems(docs: list[dict[str, Any]]) -> list[str]:
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    scheme = expected_probe_scheme(pod_web_config(docs))
    problems = []
    for kind, path in (("readinessProbe", "/-/ready"), ("livenessProbe", "/-/healthy")):
        probe = container.get(kind)
        if probe is None:
            problems.append(f"no {kind}")
            continue
        get = probe.get("httpGet")
        if scheme is None:
            if get is not None:
                problems.append(f"{kind}: httpGet cannot pass a required client certificate")
            continue
        if get is None:
            problems.append(f"{kind}: not an httpGet probe")
            continue
        if get.get("path") != path:
            problems.append(f"{kind}: path {get.get('path')}, not {path}")
        if ports.get(get.get("port")) != IMAGE_PORT and get.get("port") != IMAGE_PORT:
            problems.append(f"{kind}: port {get.get('port')} is not pqd's {IMAGE_PORT}")
        if get.get("scheme", "HTTP") != scheme:
            problems.append(
                f"{kind}: scheme {get.get('scheme', 'HTTP')}, the web config wants {scheme}"
            )
    return problems


def test_shipped_probes_follow_the_shipped_web_config() -> None:
    docs = manifests()
    assert pod_web_config(docs) is None, "shipped without a web config: update this test"
    assert probe_problems(docs) == []


@pytest.mark.parametrize(
    ("web_config", "scheme"),
    [
        (None, "HTTP"),
        (USERS, "HTTP"),
        (TLS, "HTTPS"),
        (TLS + USERS, "HTTPS"),
        (TLS + CLIENT_CERT, None),
    ],
    ids=["none", "basic-auth", "tls", "tls+basic-auth", "client-cert"],
)
def test_probe_check_follows_a_web_config(web_config: str | None, scheme: str | None) -> None:
    # The check above, on the shipped manifests given a web config: it must want the scheme
    # the kubelet needs, fail the shipped HTTP probes where that is not HTTP, and pass them
    # once changed as the DaemonSet's comment says.
    docs = copy.deepcopy(manifests())
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    if web_config is not None:
        container["args"] += ["--web-config-file", "/etc/pqd/web/web.yml"]
        docs.append({"kind": "Secret", "stringData": {"web.yml": web_config}})
    assert expected_probe_scheme(pod_web_config(docs)) == scheme
    assert (probe_problems(docs) == []) == (scheme == "HTTP")
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]
        if scheme is None:
            probe["tcpSocket"] = {"port": "metrics"}
            del probe["httpGet"]
        else:
            probe["httpGet"]["scheme"] = scheme
    assert probe_problems(docs) == []
