"""/metrics scrape latency and throughput with 10 concurrent clients: pqd vs the stock server.

Two servers run at once, each in its own process: `pqd run` (``--interval 1h``: the first cycle
has run, no other runs during the measurement) and prometheus_client's ``start_http_server``
serving the same registry pqd builds (benchmarks/_stock_server.py: PqdMetrics with the default
probe, fed with one real cycle). They are loaded in turn, ``--rounds`` rounds of ``--seconds``
each, alternating, by 10 client threads in this process, each doing GET /metrics on a new
connection in a loop (the stock server closes the connection after every response anyway).
Latency is from connect to the last byte of the body.

TLS: the same with a self-signed certificate, pqd configured through an exporter-toolkit
web-config file (``--web-config-file``) and the stock server through ``certfile``/``keyfile``;
if pqd does not serve TLS yet, that part is reported as pending.

    .venv/bin/python benchmarks/scrape.py [--quick] [--rounds N] [--seconds S] [--clients N]
"""

from __future__ import annotations

import sys


def main() -> int:
    import argparse
    import contextlib
    import http.client
    import shutil
    import ssl
    import subprocess
    import tempfile
    import threading
    import time
    from pathlib import Path

    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    seconds = 1.0 if args.quick else args.seconds
    print(c.machine_line())
    print(f"{args.clients} clients; {rounds} rounds x {seconds:.0f} s per server, alternating")

    tmp = tempfile.TemporaryDirectory(prefix="pqd-scrape-")
    cert, key = Path(tmp.name) / "cert.pem", Path(tmp.name) / "key.pem"
    have_openssl = shutil.which("openssl") is not None
    if have_openssl:
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
    web_config = Path(tmp.name) / "web-config.yml"
    web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    client_tls = ssl.create_default_context(cafile=str(cert)) if have_openssl else None

    def get(port: int, tls: bool, timeout: float = 10.0) -> int:
        conn: http.client.HTTPConnection
        if tls:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=timeout, context=client_tls
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            return len(body)
        finally:
            conn.close()

    def load(port: int, tls: bool, duration: float) -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop = time.monotonic() + duration

        def client() -> None:
            mine: list[float] = []
            failed = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    get(port, tls)
                except (OSError, RuntimeError, http.client.HTTPException):
                    failed += 1
                    continue
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)
                errors[0] += failed

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return latencies, errors[0]

    @contextlib.contextmanager
    def stock_server(tls: bool):  # type: ignore[no-untyped-def]
        extra = ["--certfile", str(cert), "--keyfile", str(key)] if tls else []
        proc = subprocess.Popen(
            [c.PYTHON, str(c.BENCH_DIR / "_stock_server.py"), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("port="):
                raise RuntimeError(f"stock server did not start: {line!r}")
            yield int(line.split("=", 1)[1])
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def compare(tls: bool) -> list[list[object]] | str:
        flags = ["--interval", "1h"]
        if tls:
            flags += ["--web-config-file", str(web_config)]
        try:
            pqd_daemon = c.Daemon(flags)
        except RuntimeError as exc:
            return f"pqd did not start with a TLS web config: {str(exc).splitlines()[-1]}"
        try:
            pqd_daemon.wait_cycles(1, 60)
            try:
                get(pqd_daemon.port, tls, timeout=5)
            except (OSError, http.client.HTTPException) as exc:
                return f"pqd does not serve TLS yet ({type(exc).__name__}: {exc})"
            with stock_server(tls) as stock_port:
                ports = {"pqd": pqd_daemon.port, "stock": stock_port}
                sizes = {name: get(port, tls) for name, port in ports.items()}
                for port in ports.values():  # warm-up
                    for _ in range(20):
                        get(port, tls)
                results: dict[str, list[float]] = {"pqd": [], "stock": []}
                errors = {"pqd": 0, "stock": 0}
                elapsed = {"pqd": 0.0, "stock": 0.0}
                for r in range(rounds):
                    order = ["pqd", "stock"] if r % 2 == 0 else ["stock", "pqd"]
                    for name in order:
                        t0 = time.monotonic()
                        lat, err = load(ports[name], tls, seconds)
                        elapsed[name] += time.monotonic() - t0
                        results[name].extend(lat)
                        errors[name] += err
        finally:
            pqd_daemon.stop()
        rows: list[list[object]] = []
        for name in ("pqd", "stock"):
            lat = sorted(results[name])
            rows.append(
                [
                    f"{name} ({'https' if tls else 'http'})",
                    sizes[name],
                    len(lat),
                    errors[name],
                    f"{len(lat) / elapsed[name]:.0f}",
                    c.ms(c.percentile(lat, 50)),
                    c.ms(c.percentile(lat, 90)),
                    c.ms(c.percentile(lat, 99)),
                    c.ms(lat[-1]) if lat else "-",
                ]
            )
        p99 = {name: c.percentile(sorted(results[name]), 99) for name in results}
        rows[0].append(c.verdict(p99["pqd"] <= p99["stock"]))
        rows[1].append("")
        return rows

    headers = [
        "server",
        "body bytes",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "target p99 pqd <= stock",
    ]
    try:
        plain = compare(tls=False)
        assert not isinstance(plain, str), plain
        c.print_table(f"Scrape /metrics, {args.clients} concurrent clients", headers, plain)
        secure = compare(tls=True) if have_openssl else "no openssl to make a certificate with"
        if isinstance(secure, str):
            print(f"TLS: pending: {secure}")
        else:
            c.print_table(
                f"Scrape /metrics over TLS, {args.clients} concurrent clients", headers, secure
            )
    finally:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
