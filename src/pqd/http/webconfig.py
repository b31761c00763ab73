"""exporter-toolkit's web configuration file (``--web-config-file``): TLS, basic auth, headers.

The format is the one Prometheus, node_exporter and every exporter built on
prometheus/exporter-toolkit read from ``--web.config.file`` (its docs/web-configuration.md), so an
operator can reuse the file they already have. Parsing is strict, as the toolkit's
``yaml.UnmarshalStrict`` is: an unknown or duplicated key is an error, not a silent no-op. Values
are decoded from the YAML nodes by Go's rules (go.yaml.in/yaml/v2), not PyYAML's: a string field
takes any scalar as written (``X-XSS-Protection: 1`` is "1"), a bool takes YAML 1.1 words
(``yes``, ``on``, ``y``) but not quoted text, null is Go's zero value.

:func:`web_config_from_yaml` is pure; :func:`web_config_from_file` reads one file;
:func:`ssl_context` reads the certificate files a config names and builds the server context.
The YAML decoding is pqd.http.webconfig_yaml's, the TLS context pqd.http.webconfig_tls's; this
module applies the toolkit's checks to the decoded values.

Every problem is one :class:`~pqd.errors.ConfigError` naming the key as a dotted path, e.g.
``tls_server_config.client_auth_type``.

Where Python's ``ssl`` module cannot do what Go's ``crypto/tls`` does, the value is either mapped to
the nearest behaviour that is never less strict, or refused with a message saying why:

- ``client_auth_type: RequireAnyClientCert`` (a certificate is required but not verified) cannot be
  expressed with OpenSSL through ``ssl``: refused. ``RequestClientCert`` (asked for, never
  required or verified) is served as ``NoClientCert``; pqd never looks at an unverified
  certificate, so the only difference is that clients are not asked for one.
- ``client_allowed_sans: []`` (Go takes it, then refuses every client) is refused.
- a bcrypt hash must be ASCII (Go would take other bytes, and no password could match them).
- ``curve_preferences`` is validated but not applied (``ssl`` can set a single ECDH curve only).
- ``http_server_config.http2`` is accepted; pqd speaks HTTP/1.1 only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pqd.errors import SECRET, ConfigError, decode_utf8, did_you_mean, read_config_bytes
from pqd.http.webconfig_tls import (
    CIPHER_SUITES,
    CURVES,
    MAX_FILE_BYTES,
    TLS_VERSIONS,
    TLSServerConfig,
    peer_matches_sans,
    ssl_context,
)
from pqd.http.webconfig_yaml import choice, decode_web_config

__all__ = [
    "BCRYPT_COST",
    "CIPHER_SUITES",
    "CURVES",
    "MAX_FILE_BYTES",
    "TLS_VERSIONS",
    "HTTPServerConfig",
    "RateLimit",
    "TLSServerConfig",
    "WebConfig",
    "hash_password",
    "peer_matches_sans",
    "referenced_files",
    "ssl_context",
    "web_config_from_file",
    "web_config_from_yaml",
]

#: Cost of hashes made by ``pqd hash-password``: what exporter-toolkit's docs use
#: (``htpasswd -nBC 10``); htpasswd's own default of 5 is too cheap, and each step doubles the
#: ~70-200 ms a first login costs.
BCRYPT_COST: Final = 10
#: bcrypt only looks at the first 72 bytes; the bcrypt package refuses longer passwords.
BCRYPT_MAX_PASSWORD_BYTES: Final = 72

# Go's tls.ClientAuthType names; "RequireClientCert" is the toolkit's backwards-compatible alias.
CLIENT_AUTH_TYPES: Final = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_CLIENT_AUTH_ALIASES: Final = {"RequireClientCert": "RequireAnyClientCert"}
_UNSUPPORTED_CLIENT_AUTH: Final = {
    "RequireAnyClientCert": (
        "not supported by pqd: Python's ssl module cannot require a client certificate without "
        "verifying it; use RequireAndVerifyClientCert with client_ca_file"
    )
}

# The toolkit lets only these headers be set, some only to fixed values (handler.go).
HEADER_VALUES: Final[Mapping[str, tuple[str, ...]]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TLS: Final = "tls_server_config."
#: tls_server_config keys whose value is a single string; any of them set switches TLS on.
_TLS_STRING_KEYS: Final = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
)


@dataclass(frozen=True)
class HTTPServerConfig:
    http2: bool = True  # accepted for compatibility; pqd serves HTTP/1.1 only
    headers: tuple[tuple[str, str], ...] = ()  # added to every response; blank values dropped
    # (values are latin-1 text of the bytes sent: the UTF-8 of the YAML text, as net/http sends)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket in front of every request: ``burst`` requests, one more per ``interval``."""

    interval: float  # seconds, > 0
    burst: int  # below 1, no request is let through (as in golang.org/x/time/rate)


@dataclass(frozen=True)
class WebConfig:
    tls: TLSServerConfig | None = None  # None: plain HTTP
    http: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    rate_limit: RateLimit | None = None

    def password_hash(self, user: str) -> str | None:
        """The bcrypt hash for ``user``, or None if there is no such user."""
        for name, hashed in self.basic_auth_users:
            if name == user:
                return hashed
        return None


# --------------------------------------------------------------------------------------------------
# The toolkit's checks after decoding


def _join_dir(base_dir: str | None, path: str) -> str | None:
    """The toolkit's SetDirectory: relative paths are relative to the config file."""
    if not path:
        return None
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)


def _tls_config(data: Mapping[str, Any], base_dir: str | None) -> TLSServerConfig | None:
    """ConfigToTLSConfig's checks; the values are already decoded and typed."""
    strings: dict[str, str] = {key: data.get(key) or "" for key in _TLS_STRING_KEYS}
    # IsEnabled: any of these switches TLS on; none of them means plain HTTP.
    if not any(strings.values()):
        return None
    if not strings["cert_file"] and not strings["cert"]:
        raise ConfigError(_TLS + "cert_file", "", "missing one of cert or cert_file")
    if not strings["key_file"] and not strings["key"]:
        raise ConfigError(_TLS + "key_file", "", "missing one of key or key_file")
    # Given both, the toolkit reads the file and ignores the inline PEM.
    for inline, path in (
        ("cert", "cert_file"),
        ("key", "key_file"),
        ("client_ca", "client_ca_file"),
    ):
        if strings[path]:
            strings[inline] = ""
    auth = _client_auth(strings)
    sans = _client_allowed_sans(data.get("client_allowed_sans"), auth)
    return TLSServerConfig(
        cert_file=_join_dir(base_dir, strings["cert_file"]),
        key_file=_join_dir(base_dir, strings["key_file"]),
        cert=strings["cert"] or None,
        key=strings["key"] or None,
        client_ca_file=_join_dir(base_dir, strings["client_ca_file"]),
        client_ca=strings["client_ca"] or None,
        client_auth_type=auth,
        client_allowed_sans=sans,
        # null is Go's zero value, which crypto/tls reads as its defaults: TLS 1.2 to 1.3.
        min_version=data.get("min_version") or "TLS12",
        max_version=data.get("max_version") or "TLS13",
        cipher_suites=data.get("cipher_suites", ()),
        prefer_server_cipher_suites=data.get("prefer_server_cipher_suites", True),
        curve_preferences=data.get("curve_preferences", ()),
    )


def _client_auth(strings: Mapping[str, str]) -> str:
    """client_auth_type, its alias resolved; refused where pqd cannot do what Go does."""
    where = _TLS + "client_auth_type"
    auth = strings["client_auth_type"] or "NoClientCert"
    auth = _CLIENT_AUTH_ALIASES.get(auth, auth)
    choice(auth, where, CLIENT_AUTH_TYPES, "client_auth_type")
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        raise ConfigError(where, auth, _UNSUPPORTED_CLIENT_AUTH[auth])
    if (strings["client_ca_file"] or strings["client_ca"]) and auth == "NoClientCert":
        raise ConfigError(
            where,
            auth,
            "client_ca_file is set but client certificates are not asked for; "
            "use RequireAndVerifyClientCert",
        )
    return auth


def _client_allowed_sans(sans: tuple[str, ...] | None, auth: str) -> tuple[str, ...]:
    where = _TLS + "client_allowed_sans"
    if sans is not None and auth != "RequireAndVerifyClientCert":
        raise ConfigError(
            where,
            list(sans),
            "needs client_auth_type RequireAndVerifyClientCert (a client may otherwise connect "
            "without a certificate to match)",
        )
    if sans == ():
        # Go takes it and then refuses every client; pqd reads no list as "no SAN check".
        raise ConfigError(where, [], "is empty: no client could connect")
    return sans or ()


def _http_config(data: Mapping[str, Any]) -> HTTPServerConfig:
    out: list[tuple[str, str]] = []
    headers: dict[str, str] = data.get("headers", {})
    for name, value in headers.items():
        where = f"http_server_config.headers.{name}"
        # validateHeaderConfig: exact names; enumerated values compared exactly ("" included).
        if name not in HEADER_VALUES:
            raise ConfigError(
                where,
                value,
                f"this header cannot be set ({did_you_mean(name, HEADER_VALUES)})",
            )
        allowed = HEADER_VALUES[name]
        if allowed and value not in allowed:
            raise ConfigError(where, value, f"must be one of {', '.join(allowed)}")
        # What net/http sends: CR and LF as spaces, the ends trimmed, the (UTF-8) bytes as they
        # are; pqd writes headers as latin-1. Blank is "unset if blank".
        wire = value.replace("\r", " ").replace("\n", " ").strip(" \t")
        if wire:
            out.append((name, wire.encode().decode("latin-1")))
    return HTTPServerConfig(http2=data.get("http2", True), headers=tuple(out))


def _bcrypt_problem(hashed: str) -> str | None:
    """golang.org/x/crypto/bcrypt's Cost(), which is all the toolkit checks a hash with."""
    if not hashed.isascii():
        return "is not a bcrypt hash: not ASCII"  # pqd compares hashes as ASCII bytes
    if len(hashed) < 59:  # bcrypt's minHashSize
        return "is not a bcrypt hash: too short (make one with: pqd hash-password)"
    if hashed[0] != "$" or hashed[1] > "2":
        return (
            "is not a bcrypt hash: no $2a$, $2b$ or $2y$ prefix (make one with: pqd hash-password)"
        )
    cost = hashed[3:5] if hashed[2] == "$" else hashed[4:6]
    if re.fullmatch(r"[-+]?[0-9]+", cost) is None or not 4 <= int(cost) <= 31:
        return "bcrypt cost must be from 4 to 31"
    return None


def _users(users: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    for user, hashed in users.items():
        problem = _bcrypt_problem(hashed)
        if problem is not None:
            # Never echo the value: it may be a plain-text password pasted by mistake.
            raise ConfigError(f"basic_auth_users.{user}", SECRET, problem)
    return tuple(users.items())


def _rate_limit(data: Mapping[str, Any]) -> RateLimit | None:
    interval: int = data.get("interval", 0)
    if interval <= 0:
        # 0 is the toolkit's "disabled"; below 0, rate.Every gives rate.Inf, which limits nothing.
        return None
    # A burst below 1 lets no request through, as golang.org/x/time/rate does.
    return RateLimit(interval=interval / 1e9, burst=data.get("burst", 0))


# --------------------------------------------------------------------------------------------------
# Public entry points


def web_config_from_yaml(
    text: str, *, base_dir: str | None = None, source: str = "<web-config>"
) -> WebConfig:
    """Parse and validate a web config. Relative file paths are joined with ``base_dir`` (the
    toolkit resolves them against the config file's directory); ``source`` names the text in
    syntax errors. Does no I/O: whether the files exist is checked by :func:`ssl_context`."""
    data = decode_web_config(text, source)
    return WebConfig(
        tls=_tls_config(data.get("tls_server_config", {}), base_dir),
        http=_http_config(data.get("http_server_config", {})),
        basic_auth_users=_users(data.get("basic_auth_users", {})),
        rate_limit=_rate_limit(data.get("rate_limit", {})),
    )


def web_config_from_file(path: str) -> WebConfig:
    """Read and validate a web config file; a missing or unreadable file is a ConfigError."""
    data = read_config_bytes(path, MAX_FILE_BYTES, field=path, cannot="cannot read web config")
    text = decode_utf8(data, path)
    return web_config_from_yaml(text, base_dir=os.path.dirname(path) or ".", source=path)


def referenced_files(config: WebConfig) -> tuple[str, ...]:
    """The certificate files a config names: a change to any of them is a change of config."""
    tls = config.tls
    if tls is None:
        return ()
    return tuple(p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None)


def hash_password(password: bytes, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash for ``basic_auth_users``. Raises ValueError for an empty password or one
    longer than bcrypt's 72 bytes (the rest would be ignored)."""
    if not password:
        raise ValueError("the password is empty")
    if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
        raise ValueError(
            f"the password is longer than {BCRYPT_MAX_PASSWORD_BYTES} bytes; bcrypt would ignore "
            "the rest"
        )
    import bcrypt

    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=cost)).decode("ascii")
