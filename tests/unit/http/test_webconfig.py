"""Unit tests for pqd.http.webconfig: exporter-toolkit web-config YAML in, WebConfig or one-line
ConfigError out; ssl_context() against certificate files made here."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization

from pqd.errors import ConfigError
from pqd.http.webconfig import (
    CIPHER_SUITES,
    MAX_FILE_BYTES,
    HTTPServerConfig,
    RateLimit,
    TLSServerConfig,
    WebConfig,
    hash_password,
    peer_matches_sans,
    referenced_files,
    ssl_context,
    web_config_from_file,
    web_config_from_yaml,
)
from tests.helpers.tls import make_ca, make_leaf

# A real cost-4 hash (cheap to check) of "secret".
HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
# exporter-toolkit's docs example, made by htpasswd (a $2y$ hash).
HTPASSWD_HASH = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"

TLS_MIN = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def _tls(extra: str) -> str:
    return TLS_MIN + "".join(f"  {line}\n" for line in extra.splitlines())


# --------------------------------------------------------------------------------------------------
# Good configs

GOOD: list[tuple[str, str, WebConfig]] = [
    ("empty", "", WebConfig()),
    ("null-sections", "tls_server_config:\nbasic_auth_users:\nhttp_server_config:\n", WebConfig()),
    ("comment-only", "# nothing here\n", WebConfig()),
    (
        "tls-minimal",
        TLS_MIN,
        WebConfig(
            tls=TLSServerConfig(cert_file="/etc/pqd/server.crt", key_file="/etc/pqd/server.key")
        ),
    ),
    (
        "tls-absolute-paths",
        "tls_server_config:\n  cert_file: /a/s.crt\n  key_file: /b/s.key\n",
        WebConfig(tls=TLSServerConfig(cert_file="/a/s.crt", key_file="/b/s.key")),
    ),
    (
        "tls-client-certs",
        _tls(
            "client_auth_type: RequireAndVerifyClientCert\n"
            "client_ca_file: ca.crt\n"
            "client_allowed_sans: [prometheus.example, 10.0.0.1]\n"
            "min_version: TLS13\n"
            "max_version: TLS13\n"
        ),
        WebConfig(
            tls=TLSServerConfig(
                cert_file="/etc/pqd/server.crt",
                key_file="/etc/pqd/server.key",
                client_ca_file="/etc/pqd/ca.crt",
                client_auth_type="RequireAndVerifyClientCert",
                client_allowed_sans=("prometheus.example", "10.0.0.1"),
                min_version="TLS13",
                max_version="TLS13",
            )
        ),
    ),
    (
        "tls-verify-if-given",
        _tls("client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: ca.crt"),
        WebConfig(
            tls=TLSServerConfig(
                cert_file="/etc/pqd/server.crt",
                key_file="/etc/pqd/server.key",
                client_ca_file="/etc/pqd/ca.crt",
                client_auth_type="VerifyClientCertIfGiven",
            )
        ),
    ),
    (
        "tls-request-client-cert",
        _tls("client_auth_type: RequestClientCert"),
        WebConfig(
            tls=TLSServerConfig(
                cert_file="/etc/pqd/server.crt",
                key_file="/etc/pqd/server.key",
                client_auth_type="RequestClientCert",
            )
        ),
    ),
    (
        "tls-ciphers-curves",
        _tls(
            "cipher_suites:\n"
            "  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
            "  - TLS_AES_128_GCM_SHA256\n"
            "prefer_server_cipher_suites: false\n"
            "curve_preferences: [X25519, CurveP256]\n"
        ),
        WebConfig(
            tls=TLSServerConfig(
                cert_file="/etc/pqd/server.crt",
                key_file="/etc/pqd/server.key",
                cipher_suites=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
                prefer_server_cipher_suites=False,
                curve_preferences=("X25519", "CurveP256"),
            )
        ),
    ),
    (
        "tls-inline-pem",
        "tls_server_config:\n  cert: |\n    PEM\n  key: |\n    KEY\n",
        WebConfig(tls=TLSServerConfig(cert="PEM\n", key="KEY\n")),
    ),
    (
        # The toolkit's IsEnabled: without cert, key, CA or client_auth_type it is plain HTTP.
        "tls-only-versions-is-plain",
        "tls_server_config:\n  min_version: TLS13\n",
        WebConfig(),
    ),
    (
        "users",
        f"basic_auth_users:\n  alice: {HASH}\n  bob: '{HTPASSWD_HASH}'\n",
        WebConfig(basic_auth_users=(("alice", HASH), ("bob", HTPASSWD_HASH))),
    ),
    (
        "headers",
        "http_server_config:\n  http2: false\n  headers:\n"
        "    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        "    Strict-Transport-Security: max-age=31536000\n    Content-Security-Policy: ''\n",
        WebConfig(
            http=HTTPServerConfig(
                http2=False,
                headers=(
                    ("X-Frame-Options", "deny"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Strict-Transport-Security", "max-age=31536000"),
                ),
            )
        ),
    ),
    (
        "rate-limit",
        "rate_limit:\n  interval: 1m30s\n  burst: 5\n",
        WebConfig(rate_limit=RateLimit(interval=90.0, burst=5)),
    ),
    ("rate-limit-off", "rate_limit:\n  interval: 0\n  burst: 0\n", WebConfig()),
    (
        "rate-limit-fraction",
        "rate_limit:\n  interval: 1.5s\n  burst: 1\n",
        WebConfig(rate_limit=RateLimit(interval=1.5, burst=1)),
    ),
]


@pytest.mark.parametrize(("text", "expected"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_config(text: str, expected: WebConfig) -> None:
    assert web_config_from_yaml(text, base_dir="/etc/pqd") == expected


def test_relative_paths_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(_tls("client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: ca.crt"))
    config = web_config_from_file(str(path))
    assert config.tls is not None
    assert config.tls.cert_file == str(tmp_path / "server.crt")
    assert referenced_files(config) == tuple(
        str(tmp_path / name) for name in ("server.crt", "server.key", "ca.crt")
    )


def test_secrets_stay_out_of_repr() -> None:
    config = web_config_from_yaml(
        f"basic_auth_users:\n  alice: {HASH}\ntls_server_config:\n  cert: C\n  key: TOPSECRET\n"
    )
    assert HASH not in repr(config)
    assert "TOPSECRET" not in repr(config)
    assert config.password_hash("alice") == HASH
    assert config.password_hash("mallory") is None


def test_every_go_cipher_name_maps_to_openssl() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for go_name, openssl_name in CIPHER_SUITES.items():
        if openssl_name is not None:
            ctx.set_ciphers(openssl_name)  # raises if OpenSSL does not know it
            tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
            assert tls12 == [openssl_name], go_name


# --------------------------------------------------------------------------------------------------
# Bad configs: (id, yaml, field, a fragment of the problem)

BAD: list[tuple[str, str, str, str]] = [
    ("yaml-syntax", "tls_server_config: [\n", "<web-config>", "invalid YAML at line"),
    ("yaml-tab", "basic_auth_users:\n\talice: x\n", "<web-config>", "invalid YAML"),
    ("not-mapping", "- a\n- b\n", "<web-config>", "must be a mapping"),
    ("scalar", "hello\n", "<web-config>", "must be a mapping"),
    (
        "unknown-top",
        "basic_auth_user:\n  a: b\n",
        "basic_auth_user",
        "did you mean basic_auth_users",
    ),
    (
        "duplicate-key",
        f"basic_auth_users:\n  a: {HASH}\n  a: {HASH}\n",
        "basic_auth_users.a",
        "duplicate key",
    ),
    ("tls-not-mapping", "tls_server_config: yes\n", "tls_server_config", "must be a mapping"),
    ("tls-unknown", _tls("certfile: x"), "tls_server_config.certfile", "did you mean cert_file"),
    ("tls-no-key", "tls_server_config:\n  cert_file: a\n", "tls_server_config.key_file", "missing"),
    (
        "tls-no-cert",
        "tls_server_config:\n  key_file: a\n",
        "tls_server_config.cert_file",
        "missing",
    ),
    (
        "tls-empty-cert",
        "tls_server_config:\n  cert_file: ''\n  key_file: a\n",
        "tls_server_config.cert_file",
        "missing one of cert or cert_file",
    ),
    (
        "auth-type",
        _tls("client_auth_type: RequireAndVerify"),
        "tls_server_config.client_auth_type",
        "did you mean RequireAndVerifyClientCert",
    ),
    (
        "auth-type-lower",
        _tls("client_auth_type: noclientcert"),
        "tls_server_config.client_auth_type",
        "unknown client_auth_type",
    ),
    (
        "auth-any",
        _tls("client_auth_type: RequireAnyClientCert"),
        "tls_server_config.client_auth_type",
        "not supported by pqd",
    ),
    (
        "auth-any-alias",
        _tls("client_auth_type: RequireClientCert"),
        "tls_server_config.client_auth_type",
        "not supported by pqd",
    ),
    (
        "ca-without-auth",
        _tls("client_ca_file: ca.crt"),
        "tls_server_config.client_auth_type",
        "not asked for",
    ),
    (
        "sans-without-verify",
        _tls("client_auth_type: VerifyClientCertIfGiven\nclient_allowed_sans: [a]"),
        "tls_server_config.client_allowed_sans",
        "RequireAndVerifyClientCert",
    ),
    (
        "sans-not-list",
        _tls("client_auth_type: RequireAndVerifyClientCert\nclient_allowed_sans: a"),
        "tls_server_config.client_allowed_sans",
        "list of strings",
    ),
    (
        "min-version",
        _tls("min_version: TLS1.2"),
        "tls_server_config.min_version",
        "unknown TLS version",
    ),
    (
        "max-version",
        _tls("max_version: 13"),
        "tls_server_config.max_version",
        "unknown TLS version",
    ),
    (
        "cipher",
        _tls("cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]"),
        "tls_server_config.cipher_suites[0]",
        "unknown cipher suite",
    ),
    (
        "cipher-not-list",
        _tls("cipher_suites: TLS_AES_128_GCM_SHA256"),
        "tls_server_config.cipher_suites",
        "list of strings",
    ),
    (
        "curve",
        _tls("curve_preferences: [P256]"),
        "tls_server_config.curve_preferences[0]",
        "unknown curve",
    ),
    (
        "prefer-string",
        _tls("prefer_server_cipher_suites: 'true'"),
        "tls_server_config.prefer_server_cipher_suites",
        "true or false",
    ),
    (
        "http-unknown",
        "http_server_config:\n  http3: true\n",
        "http_server_config.http3",
        "did you mean http2",
    ),
    ("http2-int", "http_server_config:\n  http2: 1\n", "http_server_config.http2", "true or false"),
    (
        "header-unknown",
        "http_server_config:\n  headers:\n    X-Powered-By: pqd\n",
        "http_server_config.headers.X-Powered-By",
        "cannot be set",
    ),
    (
        "header-value",
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "http_server_config.headers.X-Frame-Options",
        "deny, sameorigin",
    ),
    (
        "header-nosniff",
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "http_server_config.headers.X-Content-Type-Options",
        "nosniff",
    ),
    ("users-list", "basic_auth_users: [alice]\n", "basic_auth_users", "must be a mapping"),
    (
        "user-plain-password",
        "basic_auth_users:\n  alice: hunter2\n",
        "basic_auth_users.alice",
        "not a bcrypt hash",
    ),
    (
        "user-hash-cost",
        "basic_auth_users:\n  alice: " + "$2b$03$" + HASH[7:] + "\n",
        "basic_auth_users.alice",
        "cost must be from 4 to 31",
    ),
    (
        "user-hash-number",
        "basic_auth_users:\n  alice: 12\n",
        "basic_auth_users.alice",
        "not a bcrypt hash",
    ),
    (
        "rate-unknown",
        "rate_limit:\n  intervall: 1s\n",
        "rate_limit.intervall",
        "did you mean interval",
    ),
    (
        "rate-interval",
        "rate_limit:\n  interval: 1 second\n  burst: 1\n",
        "rate_limit.interval",
        "duration",
    ),
    (
        "rate-burst-text",
        "rate_limit:\n  interval: 1s\n  burst: many\n",
        "rate_limit.burst",
        "integer",
    ),
]


@pytest.mark.parametrize(
    ("text", "field", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_config(text: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        web_config_from_yaml(text)
    err = info.value
    assert err.field == field
    assert problem in err.problem
    assert "\n" not in str(err)
    assert str(err).startswith(f"{field}=")


# --------------------------------------------------------------------------------------------------
# Go's verdicts, key by key: what exporter-toolkit (web/tls_config.go, web/handler.go) decoding with
# go.yaml.in/yaml/v2's UnmarshalStrict accepts and refuses. Comments say what Go does.

AUTH = "client_auth_type: RequireAndVerifyClientCert"
HDR = "http_server_config:\n  headers:\n"
RATE = "rate_limit:\n"


def _tls_of(config: WebConfig) -> TLSServerConfig:
    assert config.tls is not None
    return config.tls


def _rate_of(config: WebConfig) -> tuple[float, int] | None:
    limit = config.rate_limit
    return None if limit is None else (limit.interval, limit.burst)


# (id, yaml, what to look at, what Go reads)
GO_ACCEPTS: list[tuple[str, str, Callable[[WebConfig], object], object]] = [
    # tls_server_config: a struct; null is the zero struct (plain HTTP).
    ("tls-null", "tls_server_config: ~\n", lambda c: c.tls, None),
    # cert_file, key_file, client_ca_file: strings; yaml.v2 takes any scalar as written.
    (
        "cert_file-int",
        "tls_server_config:\n  cert_file: 3\n  key_file: k\n",
        lambda c: _tls_of(c).cert_file,
        "/etc/pqd/3",
    ),
    (
        "key_file-bool",
        "tls_server_config:\n  cert_file: c\n  key_file: yes\n",
        lambda c: _tls_of(c).key_file,
        "/etc/pqd/yes",
    ),
    (
        "client_ca_file-int",
        _tls(f"{AUTH}\nclient_ca_file: 2024"),
        lambda c: _tls_of(c).client_ca_file,
        "/etc/pqd/2024",
    ),
    # cert, key, client_ca: inline PEM strings; given with the *_file key, the file wins.
    ("cert-and-file", _tls("cert: PEM"), lambda c: _tls_of(c).cert, None),
    ("key-and-file", _tls("key: PEM"), lambda c: _tls_of(c).key, None),
    (
        "key-inline",
        "tls_server_config:\n  cert: C\n  key: 0x1F\n",
        lambda c: _tls_of(c).key,
        "0x1F",
    ),
    ("client_ca-inline", _tls(f"{AUTH}\nclient_ca: PEM"), lambda c: _tls_of(c).client_ca, "PEM"),
    (
        "client_ca-and-file",
        _tls(f"{AUTH}\nclient_ca: PEM\nclient_ca_file: ca.crt"),
        lambda c: _tls_of(c).client_ca,
        None,
    ),
    # client_auth_type: a string; "" is NoClientCert.
    (
        "client_auth-empty",
        _tls("client_auth_type: ''"),
        lambda c: _tls_of(c).client_auth_type,
        "NoClientCert",
    ),
    (
        "client_auth-verify",
        _tls(AUTH),
        lambda c: _tls_of(c).client_auth_type,
        "RequireAndVerifyClientCert",
    ),
    # client_allowed_sans: []string; items as written, null item "", null list = no check.
    (
        "sans-scalars",
        _tls(f"{AUTH}\nclient_allowed_sans: [1.5, true, ~]"),
        lambda c: _tls_of(c).client_allowed_sans,
        ("1.5", "true", ""),
    ),
    (
        "sans-null",
        _tls("client_auth_type: VerifyClientCertIfGiven\nclient_allowed_sans:"),
        lambda c: _tls_of(c).client_allowed_sans,
        (),
    ),
    # min_version, max_version: TLSVersion; null skips UnmarshalYAML (Go's zero: the default).
    ("min-null", _tls("min_version:"), lambda c: _tls_of(c).min_version, "TLS12"),
    ("max-tls12", _tls("max_version: TLS12"), lambda c: _tls_of(c).max_version, "TLS12"),
    # Go does not compare them: min above max is taken (and no handshake succeeds).
    (
        "min-above-max",
        _tls("min_version: TLS13\nmax_version: TLS12"),
        lambda c: (_tls_of(c).min_version, _tls_of(c).max_version),
        ("TLS13", "TLS12"),
    ),
    # cipher_suites, curve_preferences: []Cipher, []Curve; a null item is Go's zero (ignored).
    (
        "cipher-null-item",
        _tls("cipher_suites: [~, TLS_AES_128_GCM_SHA256]"),
        lambda c: _tls_of(c).cipher_suites,
        ("TLS_AES_128_GCM_SHA256",),
    ),
    (
        "curves",
        _tls("curve_preferences: [CurveP521, X25519]"),
        lambda c: _tls_of(c).curve_preferences,
        ("CurveP521", "X25519"),
    ),
    # prefer_server_cipher_suites, http2: bool; YAML 1.1 words (y, on, no...); null is false.
    (
        "prefer-n",
        _tls("prefer_server_cipher_suites: n"),
        lambda c: _tls_of(c).prefer_server_cipher_suites,
        False,
    ),
    (
        "prefer-null",
        _tls("prefer_server_cipher_suites:"),
        lambda c: _tls_of(c).prefer_server_cipher_suites,
        False,
    ),
    ("http2-on", "http_server_config:\n  http2: On\n", lambda c: c.http.http2, True),
    ("http2-y", "http_server_config:\n  http2: y\n", lambda c: c.http.http2, True),
    # headers: map[string]string; any scalar value as written (an unquoted 1 is "1").
    (
        "xss-int",
        HDR + "    X-XSS-Protection: 1\n",
        lambda c: c.http.headers,
        (("X-XSS-Protection", "1"),),
    ),
    (
        "xss-block",
        HDR + "    X-XSS-Protection: 1; mode=block\n",
        lambda c: c.http.headers,
        (("X-XSS-Protection", "1; mode=block"),),
    ),
    (
        "hsts-hex-as-written",
        HDR + "    Strict-Transport-Security: 0x10\n",
        lambda c: c.http.headers,
        (("Strict-Transport-Security", "0x10"),),
    ),
    ("hsts-null-unset", HDR + "    Strict-Transport-Security:\n", lambda c: c.http.headers, ()),
    (
        "csp-bool",
        HDR + "    Content-Security-Policy: true\n",
        lambda c: c.http.headers,
        (("Content-Security-Policy", "true"),),
    ),
    # net/http sends CR and LF as spaces: no header can be injected.
    (
        "csp-newline",
        HDR + '    Content-Security-Policy: "a\\r\\nSet-Cookie: x"\n',
        lambda c: c.http.headers,
        (("Content-Security-Policy", "a  Set-Cookie: x"),),
    ),
    (
        "csp-utf8",
        HDR + "    Content-Security-Policy: é\n",
        lambda c: c.http.headers,
        (("Content-Security-Policy", "é".encode().decode("latin-1")),),
    ),
    (
        "xfo-sameorigin",
        HDR + "    X-Frame-Options: sameorigin\n",
        lambda c: c.http.headers,
        (("X-Frame-Options", "sameorigin"),),
    ),
    (
        "xcto-quoted",
        HDR + "    X-Content-Type-Options: 'nosniff'\n",
        lambda c: c.http.headers,
        (("X-Content-Type-Options", "nosniff"),),
    ),
    # basic_auth_users: map[string]Secret; keys as written; bcrypt.Cost() is the only check.
    (
        "user-int-name",
        f"basic_auth_users:\n  1: {HASH}\n",
        lambda c: c.basic_auth_users,
        (("1", HASH),),
    ),
    (
        "user-colon",
        f"basic_auth_users:\n  'a:b': {HASH}\n",
        lambda c: c.basic_auth_users,
        (("a:b", HASH),),
    ),
    (
        "user-hash-59-bytes",
        f"basic_auth_users:\n  a: {HASH[:-1]}\n",
        lambda c: c.basic_auth_users,
        (("a", HASH[:-1]),),
    ),
    # rate_limit.interval: time.Duration; a string via time.ParseDuration, an int in ns, a float
    # truncated to ns; 0 disables; below 0 is rate.Inf (no limit).
    ("interval-ns", RATE + "  interval: 1_000_000_000\n  burst: 2\n", _rate_of, (1.0, 2)),
    ("interval-float-ns", RATE + "  interval: 1.5\n  burst: 1\n", _rate_of, (1e-9, 1)),
    ("interval-h-ms", RATE + "  interval: 1h0.5ms\n  burst: 1\n", _rate_of, (3600.0005, 1)),
    ("interval-negative", RATE + "  interval: -1s\n  burst: 1\n", _rate_of, None),
    # rate_limit.burst: int; hex and octal ints, floats truncated; below 1 lets nothing through.
    ("burst-hex", RATE + "  interval: 1s\n  burst: 0x10\n", _rate_of, (1.0, 16)),
    ("burst-octal", RATE + "  interval: 1s\n  burst: 010\n", _rate_of, (1.0, 8)),
    ("burst-float", RATE + "  interval: 1s\n  burst: 2.9\n", _rate_of, (1.0, 2)),
    ("burst-zero", RATE + "  interval: 1s\n  burst: 0\n", _rate_of, (1.0, 0)),
]


@pytest.mark.parametrize(
    ("text", "look", "expected"), [g[1:] for g in GO_ACCEPTS], ids=[g[0] for g in GO_ACCEPTS]
)
def test_go_accepts(text: str, look: Callable[[WebConfig], object], expected: object) -> None:
    assert look(web_config_from_yaml(text, base_dir="/etc/pqd")) == expected


# (id, yaml, the key named in the error)
GO_REFUSES: list[tuple[str, str, str]] = [
    # Unknown keys at every level (UnmarshalStrict); names are case-sensitive.
    ("top-unknown", "Rate_limit:\n  burst: 1\n", "Rate_limit"),
    ("tls-list", "tls_server_config: [a]\n", "tls_server_config"),
    ("http-unknown-case", "http_server_config:\n  HTTP2: true\n", "http_server_config.HTTP2"),
    ("rate-scalar", "rate_limit: 5\n", "rate_limit"),
    # A key twice, even spelled differently (1 and '1' are both "1" to Go).
    ("user-twice", f"basic_auth_users:\n  1: {HASH}\n  '1': {HASH}\n", "basic_auth_users.1"),
    # String fields take no list or mapping.
    (
        "cert_file-list",
        "tls_server_config:\n  cert_file: [a]\n  key_file: k\n",
        "tls_server_config.cert_file",
    ),
    (
        "key_file-map",
        "tls_server_config:\n  cert_file: c\n  key_file: {a: b}\n",
        "tls_server_config.key_file",
    ),
    ("cert-list", "tls_server_config:\n  cert: [a]\n  key: k\n", "tls_server_config.cert"),
    ("key-list", "tls_server_config:\n  cert: c\n  key: [k]\n", "tls_server_config.key"),
    ("client_ca-map", _tls(f"{AUTH}\nclient_ca: {{a: b}}"), "tls_server_config.client_ca"),
    (
        "client_ca_file-list",
        _tls(f"{AUTH}\nclient_ca_file: [a]"),
        "tls_server_config.client_ca_file",
    ),
    # client_auth_type: exact names only ("invalid ClientAuth").
    (
        "client_auth-case",
        _tls("client_auth_type: requireandverifyclientcert"),
        "tls_server_config.client_auth_type",
    ),
    (
        "client_auth-list",
        _tls("client_auth_type: [NoClientCert]"),
        "tls_server_config.client_auth_type",
    ),
    # client_allowed_sans: a list; needs a client_auth_type that requires a certificate.
    (
        "sans-scalar",
        _tls(f"{AUTH}\nclient_allowed_sans: a"),
        "tls_server_config.client_allowed_sans",
    ),
    (
        "sans-item-list",
        _tls(f"{AUTH}\nclient_allowed_sans: [[a]]"),
        "tls_server_config.client_allowed_sans[0]",
    ),
    (
        "sans-request-cert",
        _tls("client_auth_type: RequestClientCert\nclient_allowed_sans: [a]"),
        "tls_server_config.client_allowed_sans",
    ),
    # pqd only: Go takes an empty list and then refuses every client.
    (
        "sans-empty",
        _tls(f"{AUTH}\nclient_allowed_sans: []"),
        "tls_server_config.client_allowed_sans",
    ),
    # min_version, max_version: exact names; "" is looked up too (only null is skipped); checked
    # while decoding, so even when TLS is off.
    ("min-lower", _tls("min_version: tls12"), "tls_server_config.min_version"),
    ("min-empty-string", _tls("min_version: ''"), "tls_server_config.min_version"),
    ("max-int", _tls("max_version: 13"), "tls_server_config.max_version"),
    ("min-tls-off", "tls_server_config:\n  min_version: TLS9\n", "tls_server_config.min_version"),
    # cipher_suites, curve_preferences: lists of exact names, checked even when TLS is off.
    (
        "cipher-lower",
        _tls("cipher_suites: [tls_aes_128_gcm_sha256]"),
        "tls_server_config.cipher_suites[0]",
    ),
    (
        "cipher-tls-off",
        "tls_server_config:\n  cipher_suites: [RC4]\n",
        "tls_server_config.cipher_suites[0]",
    ),
    ("curve-lower", _tls("curve_preferences: [x25519]"), "tls_server_config.curve_preferences[0]"),
    ("curves-scalar", _tls("curve_preferences: X25519"), "tls_server_config.curve_preferences"),
    # bool: quoted text and numbers are not booleans.
    (
        "prefer-quoted",
        _tls("prefer_server_cipher_suites: 'yes'"),
        "tls_server_config.prefer_server_cipher_suites",
    ),
    ("http2-int", "http_server_config:\n  http2: 0\n", "http_server_config.http2"),
    ("http2-list", "http_server_config:\n  http2: [true]\n", "http_server_config.http2"),
    # headers: a mapping of exact names; enumerated values compared exactly, "" included.
    (
        "headers-list",
        "http_server_config:\n  headers: [X-Frame-Options]\n",
        "http_server_config.headers",
    ),
    (
        "header-lower-name",
        HDR + "    x-frame-options: deny\n",
        "http_server_config.headers.x-frame-options",
    ),
    (
        "xfo-upper",
        HDR + "    X-Frame-Options: DENY\n",
        "http_server_config.headers.X-Frame-Options",
    ),
    ("xfo-empty", HDR + "    X-Frame-Options: ''\n", "http_server_config.headers.X-Frame-Options"),
    (
        "xcto-null",
        HDR + "    X-Content-Type-Options:\n",
        "http_server_config.headers.X-Content-Type-Options",
    ),
    (
        "xss-list",
        HDR + "    X-XSS-Protection: [1]\n",
        "http_server_config.headers.X-XSS-Protection",
    ),
    (
        "hsts-map",
        HDR + "    Strict-Transport-Security: {max-age: 1}\n",
        "http_server_config.headers.Strict-Transport-Security",
    ),
    (
        "csp-list",
        HDR + "    Content-Security-Policy: [a]\n",
        "http_server_config.headers.Content-Security-Policy",
    ),
    # basic_auth_users: a mapping; bcrypt.Cost() refuses short hashes, costs outside 4..31.
    ("users-scalar", "basic_auth_users: alice\n", "basic_auth_users"),
    ("user-hash-null", "basic_auth_users:\n  alice:\n", "basic_auth_users.alice"),
    ("user-hash-list", f"basic_auth_users:\n  alice: [{HASH}]\n", "basic_auth_users.alice"),
    (
        "user-hash-cost-32",
        f"basic_auth_users:\n  alice: '$2b$32${HASH[7:]}'\n",
        "basic_auth_users.alice",
    ),
    (
        "user-hash-version-3",
        f"basic_auth_users:\n  alice: '$3b${HASH[4:]}'\n",
        "basic_auth_users.alice",
    ),
    # interval: a quoted number is a string for time.ParseDuration (no unit); bools and dates are
    # not durations; beyond int64 nanoseconds is out of range.
    ("interval-quoted-int", RATE + "  interval: '1000'\n", "rate_limit.interval"),
    ("interval-bool", RATE + "  interval: yes\n", "rate_limit.interval"),
    ("interval-date", RATE + "  interval: 2001-01-01\n", "rate_limit.interval"),
    ("interval-huge", RATE + "  interval: 3000000h\n", "rate_limit.interval"),
    # burst: a quoted number is a string; NaN and beyond int64 do not fit.
    ("burst-quoted", RATE + "  interval: 1s\n  burst: '5'\n", "rate_limit.burst"),
    ("burst-nan", RATE + "  interval: 1s\n  burst: .nan\n", "rate_limit.burst"),
    (
        "burst-int64-overflow",
        RATE + "  interval: 1s\n  burst: 9223372036854775808\n",
        "rate_limit.burst",
    ),
    ("burst-bool", RATE + "  interval: 1s\n  burst: on\n", "rate_limit.burst"),
]


@pytest.mark.parametrize(
    ("text", "field"), [g[1:] for g in GO_REFUSES], ids=[g[0] for g in GO_REFUSES]
)
def test_go_refuses(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        web_config_from_yaml(text)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_a_bad_hash_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        web_config_from_yaml("basic_auth_users:\n  alice: hunter2\n")
    assert "hunter2" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    with pytest.raises(ConfigError, match="cannot read web config: No such file"):
        web_config_from_file(str(missing))
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        web_config_from_file(str(binary))
    broken = tmp_path / "broken.yml"
    broken.write_text("basic_auth_users: {\n")
    with pytest.raises(ConfigError) as info:
        web_config_from_file(str(broken))
    assert info.value.field == str(broken)


@pytest.mark.parametrize("kind", ["fifo", "directory", "too large"])
def test_web_config_files_are_read_only_if_regular_and_small(kind: str, tmp_path: Path) -> None:
    """The same bounded reader as pqd.toml's: a FIFO would block the reload, /dev/zero never
    ends."""
    path = tmp_path / "web.yml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError) as info:
        web_config_from_file(str(path))
    expected = f"larger than {MAX_FILE_BYTES} bytes" if kind == "too large" else "not a regular"
    assert (info.value.field, info.value.value) == (str(path), str(path))
    assert f"cannot read web config: {expected}" in str(info.value)


def test_certificate_files_are_read_only_if_regular(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "server.crt")
    config = web_config_from_yaml(TLS_MIN, base_dir=str(tmp_path))
    assert config.tls is not None
    with pytest.raises(ConfigError) as info:
        ssl_context(config.tls)
    assert info.value.field == "tls_server_config.cert_file"
    assert "cannot read: not a regular file" in str(info.value)


# --------------------------------------------------------------------------------------------------
# ssl_context: the files named by a config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    make_leaf(ca, "localhost").write(directory, "server")
    make_leaf(ca, "other").write(directory, "other")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    return directory


def _context(pki: Path, extra: str = "") -> ssl.SSLContext:
    config = web_config_from_yaml(_tls(extra), base_dir=str(pki))
    assert config.tls is not None
    return ssl_context(config.tls)


def test_context_from_files(pki: Path) -> None:
    ctx = _context(pki, "min_version: TLS13")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE
    ctx = _context(pki, "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: ca.crt")
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] == 1
    ctx = _context(pki, "client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: ca.crt")
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    ctx = _context(pki, "cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]")
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


def test_context_from_inline_pem(pki: Path) -> None:
    cert = (pki / "server.crt").read_text()
    key = (pki / "server.key").read_text()
    indent = "\n".join("    " + line for line in cert.splitlines())
    key_indent = "\n".join("    " + line for line in key.splitlines())
    config = web_config_from_yaml(
        f"tls_server_config:\n  cert: |\n{indent}\n  key: |\n{key_indent}\n"
    )
    assert config.tls is not None
    assert isinstance(ssl_context(config.tls), ssl.SSLContext)


@pytest.mark.parametrize(
    ("extra_files", "yaml_text", "field", "problem"),
    [
        (
            {},
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file",
            "cannot read: No such file",
        ),
        (
            {},
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
            "tls_server_config.key_file",
            "does not match the certificate",
        ),
        (
            {"junk.crt": "not a certificate\n"},
            "tls_server_config:\n  cert_file: junk.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file",
            "no PEM certificate",
        ),
        (
            {"junk.key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
            "tls_server_config:\n  cert_file: server.crt\n  key_file: junk.key\n",
            "tls_server_config.key_file",
            "not a valid PEM private key",
        ),
        (
            {"empty-ca.crt": "\n"},
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty-ca.crt\n",
            "tls_server_config.client_ca_file",
            "no usable CA certificate",
        ),
    ],
    ids=["missing-cert", "key-mismatch", "junk-cert", "junk-key", "empty-ca"],
)
def test_context_errors(
    pki: Path, tmp_path: Path, extra_files: dict[str, str], yaml_text: str, field: str, problem: str
) -> None:
    for name in ("server.crt", "server.key", "other.key"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    for name, text in extra_files.items():
        (tmp_path / name).write_text(text)
    config = web_config_from_yaml(yaml_text, base_dir=str(tmp_path))
    assert config.tls is not None
    with pytest.raises(ConfigError) as info:
        ssl_context(config.tls)
    assert info.value.field == field
    assert problem in info.value.problem
    assert "\n" not in str(info.value)


def test_encrypted_key_is_refused_without_prompting(pki: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((pki / "server.key").read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    )
    (tmp_path / "enc.key").write_bytes(encrypted)
    config = web_config_from_yaml(
        f"tls_server_config:\n  cert_file: {pki / 'server.crt'}\n  key_file: enc.key\n",
        base_dir=str(tmp_path),
    )
    assert config.tls is not None
    with pytest.raises(ConfigError, match="encrypted"):
        ssl_context(config.tls)


# --------------------------------------------------------------------------------------------------
# Helpers


def test_san_matching() -> None:
    cert = {"subjectAltName": (("DNS", "prom.example"), ("IP Address", "2001:DB8:0:0:0:0:0:1\n"))}
    assert peer_matches_sans(cert, ("prom.example",))
    assert peer_matches_sans(cert, ("2001:db8::1",))
    assert not peer_matches_sans(cert, ("other.example",))
    assert not peer_matches_sans({}, ("prom.example",))


def test_hash_password() -> None:
    hashed = hash_password(b"correct horse")
    assert hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(b"correct horse", hashed.encode())
    assert web_config_from_yaml(f"basic_auth_users:\n  a: {hashed}\n").password_hash("a") == hashed
    with pytest.raises(ValueError, match="empty"):
        hash_password(b"")
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password(b"x" * 73)
