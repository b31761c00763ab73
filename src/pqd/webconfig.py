"""exporter-toolkit's web configuration file (``--web-config-file``): TLS, basic auth, headers.

The format is the one Prometheus, node_exporter and every exporter built on
prometheus/exporter-toolkit read from ``--web.config.file`` (its docs/web-configuration.md), so an
operator can reuse the file they already have. Parsing is strict, as the toolkit's
``yaml.UnmarshalStrict`` is: an unknown or duplicated key is an error, not a silent no-op.

:func:`web_config_from_yaml` is pure; :func:`web_config_from_file` reads one file;
:func:`ssl_context` reads the certificate files a config names and builds the server context.
Every problem is one :class:`~pqd.config.ConfigError` naming the key as a dotted path, e.g.
``tls_server_config.client_auth_type``.

Where Python's ``ssl`` module cannot do what Go's ``crypto/tls`` does, the value is either mapped to
the nearest behaviour that is never less strict, or refused with a message saying why:

- ``client_auth_type: RequireAnyClientCert`` (a certificate is required but not verified) cannot be
  expressed with OpenSSL through ``ssl``: refused. ``RequestClientCert`` (asked for, never
  required or verified) is served as ``NoClientCert``; pqd never looks at an unverified
  certificate, so the only difference is that clients are not asked for one.
- ``curve_preferences`` is validated but not applied (``ssl`` can set a single ECDH curve only).
- ``http_server_config.http2`` is accepted; pqd speaks HTTP/1.1 only.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from pqd.config import ConfigError

__all__ = [
    "BCRYPT_COST",
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
#: A web config is a few hundred bytes; refuse to read /dev/zero or a log file by mistake.
MAX_FILE_BYTES: Final = 1 << 20

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
_VERIFYING_CLIENT_AUTH: Final = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")

TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() (the ones without known security issues), which is all the toolkit
# accepts, with OpenSSL's names. TLS 1.3 suites map to None: neither Go nor OpenSSL lets them be
# configured this way, so they are accepted and have no effect, as in Go.
CIPHER_SUITES: Final[Mapping[str, str | None]] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
CURVES: Final = ("CurveP256", "CurveP384", "CurveP521", "X25519")

# The toolkit lets only these headers be set, some only to fixed values (handler.go).
HEADER_VALUES: Final[Mapping[str, tuple[str, ...]]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TOP_KEYS: Final = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
#: tls_server_config keys whose value is a single string.
_TLS_STRING_KEYS: Final = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
)
_TLS_KEYS: Final = (
    *_TLS_STRING_KEYS,
    "client_allowed_sans",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_HTTP_KEYS: Final = ("http2", "headers")
_RATE_LIMIT_KEYS: Final = ("interval", "burst")

# What Go's bcrypt.Cost accepts and the bcrypt package can check: $2a$, $2b$, $2x$, $2y$.
_BCRYPT_RE: Final = re.compile(r"\$2[abxy]\$([0-9]{2})\$[./A-Za-z0-9]{53}")
# Go's time.ParseDuration, which yaml.v2 uses for a time.Duration such as rate_limit.interval.
_GO_DURATION_PART: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS: Final[Mapping[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SECRET: Final = "<secret>"  # shown instead of a key or a password hash in errors


@dataclass(frozen=True)
class TLSServerConfig:
    """``tls_server_config``; file paths are already joined with the config file's directory."""

    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None  # inline PEM, instead of cert_file
    key: str | None = field(default=None, repr=False)  # inline PEM, instead of key_file
    client_ca_file: str | None = None
    client_ca: str | None = None  # inline PEM, instead of client_ca_file
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()  # Go names, as written
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()  # validated, not applied (see the module docstring)


@dataclass(frozen=True)
class HTTPServerConfig:
    http2: bool = True  # accepted for compatibility; pqd serves HTTP/1.1 only
    headers: tuple[tuple[str, str], ...] = ()  # added to every response; blank values dropped


@dataclass(frozen=True)
class RateLimit:
    """A token bucket in front of every request: ``burst`` requests, one more per ``interval``."""

    interval: float  # seconds, > 0
    burst: int


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
# YAML


@functools.cache
def _strict_loader() -> type[Any]:
    """safe_load, except that a key given twice is an error (PyYAML keeps the last one silently;
    the toolkit's UnmarshalStrict refuses it, and a duplicated user is a likely mistake).

    Built on first use: PyYAML (and bcrypt) are only loaded by a pqd that has a web config.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[object, object]:
        loader.flatten_mapping(node)
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; construct_mapping reports it properly below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return loader.construct_mapping(node, deep=True)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def _load_yaml(text: str, source: str) -> object:
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        line = ""
        if mark is not None:
            lines = text.splitlines()
            line = lines[mark.line][:200] if mark.line < len(lines) else ""
        raise ConfigError(source, line, f"invalid YAML{where}: {problem}") from None


# --------------------------------------------------------------------------------------------------
# Typed access to the parsed document


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]}?" if close else f"known: {', '.join(choices)}"


def _mapping(value: object, where: str) -> dict[str, object]:
    if value is None:  # "tls_server_config:" with nothing under it, as Go's zero value
        return {}
    if not isinstance(value, dict):
        raise ConfigError(where, value, "must be a mapping of keys to values")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}.{key}", key, "keys must be strings")
    return value


def _check_keys(data: Mapping[str, object], known: tuple[str, ...], prefix: str) -> None:
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(where, data[key], f"unknown key ({_did_you_mean(key, known)})")


def _string(data: Mapping[str, object], key: str, where: str, *, secret: bool = False) -> str:
    """A string value; missing or null is "" (unset), as Go's zero value is."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(where, _SECRET if secret else value, "must be a string")
    return value


def _bool(data: Mapping[str, object], key: str, where: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(where, value, "must be true or false")
    return value


def _string_list(data: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(where, value, "must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{where}[{i}]", item, "must be a string")
    return tuple(value)


def _join_dir(base_dir: str | None, path: str) -> str | None:
    """The toolkit's SetDirectory: relative paths are relative to the config file."""
    if not path:
        return None
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)


def _choice(value: str, where: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ConfigError(where, value, f"unknown {what} ({_did_you_mean(value, choices)})")
    return value


def _tls_config(raw: object, base_dir: str | None) -> TLSServerConfig | None:
    prefix = "tls_server_config"
    data = _mapping(raw, prefix)
    _check_keys(data, _TLS_KEYS, prefix)

    def where(key: str) -> str:
        return f"{prefix}.{key}"

    strings = {key: _string(data, key, where(key), secret=key == "key") for key in _TLS_STRING_KEYS}
    # The toolkit's TLSConfig.IsEnabled: any of these switches TLS on; none of them means plain
    # HTTP even if, say, min_version is set.
    enabling = ("cert_file", "cert", "key_file", "key", "client_ca_file", "client_ca")
    if not any(strings[k] for k in (*enabling, "client_auth_type")):
        return None
    for inline, path in (
        ("cert", "cert_file"),
        ("key", "key_file"),
        ("client_ca", "client_ca_file"),
    ):
        if strings[inline] and strings[path]:
            raise ConfigError(
                where(inline),
                _SECRET if inline == "key" else "<inline PEM>",
                f"give either {inline} or {path}, not both",
            )
    if not strings["cert_file"] and not strings["cert"]:
        raise ConfigError(where("cert_file"), "", "missing one of cert or cert_file")
    if not strings["key_file"] and not strings["key"]:
        raise ConfigError(where("key_file"), "", "missing one of key or key_file")

    auth = strings["client_auth_type"] or "NoClientCert"
    auth = _CLIENT_AUTH_ALIASES.get(auth, auth)
    _choice(auth, where("client_auth_type"), CLIENT_AUTH_TYPES, "client_auth_type")
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        raise ConfigError(where("client_auth_type"), auth, _UNSUPPORTED_CLIENT_AUTH[auth])
    has_ca = bool(strings["client_ca_file"] or strings["client_ca"])
    if has_ca and auth == "NoClientCert":
        raise ConfigError(
            where("client_auth_type"),
            auth,
            "client_ca_file is set but client certificates are not asked for; "
            "use RequireAndVerifyClientCert",
        )

    sans = _string_list(data, "client_allowed_sans", where("client_allowed_sans"))
    if "client_allowed_sans" in data and auth != "RequireAndVerifyClientCert":
        raise ConfigError(
            where("client_allowed_sans"),
            list(sans),
            "needs client_auth_type RequireAndVerifyClientCert (a client may otherwise connect "
            "without a certificate to match)",
        )

    versions = tuple(TLS_VERSIONS)
    min_version = _choice(
        strings["min_version"] or "TLS12", where("min_version"), versions, "TLS version"
    )
    max_version = _choice(
        strings["max_version"] or "TLS13", where("max_version"), versions, "TLS version"
    )
    if TLS_VERSIONS[min_version] > TLS_VERSIONS[max_version]:
        raise ConfigError(where("min_version"), min_version, f"is above max_version {max_version}")

    ciphers = _string_list(data, "cipher_suites", where("cipher_suites"))
    for i, name in enumerate(ciphers):
        _choice(name, f"{where('cipher_suites')}[{i}]", tuple(CIPHER_SUITES), "cipher suite")
    curves = _string_list(data, "curve_preferences", where("curve_preferences"))
    for i, name in enumerate(curves):
        _choice(name, f"{where('curve_preferences')}[{i}]", CURVES, "curve")

    return TLSServerConfig(
        cert_file=_join_dir(base_dir, strings["cert_file"]),
        key_file=_join_dir(base_dir, strings["key_file"]),
        cert=strings["cert"] or None,
        key=strings["key"] or None,
        client_ca_file=_join_dir(base_dir, strings["client_ca_file"]),
        client_ca=strings["client_ca"] or None,
        client_auth_type=auth,
        client_allowed_sans=sans,
        min_version=min_version,
        max_version=max_version,
        cipher_suites=ciphers,
        prefer_server_cipher_suites=_bool(
            data, "prefer_server_cipher_suites", where("prefer_server_cipher_suites"), True
        ),
        curve_preferences=curves,
    )


def _http_config(raw: object) -> HTTPServerConfig:
    prefix = "http_server_config"
    data = _mapping(raw, prefix)
    _check_keys(data, _HTTP_KEYS, prefix)
    headers_where = f"{prefix}.headers"
    headers = _mapping(data.get("headers"), headers_where)
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        where = f"{headers_where}.{name}"
        if name not in HEADER_VALUES:
            raise ConfigError(
                where,
                value,
                f"this header cannot be set ({_did_you_mean(name, tuple(HEADER_VALUES))})",
            )
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(where, value, "must be a string")
        if not value:  # "Unset if blank"
            continue
        allowed = HEADER_VALUES[name]
        if allowed and value not in allowed:
            raise ConfigError(where, value, f"must be one of {', '.join(allowed)}")
        if not value.isprintable() or not value.isascii():
            raise ConfigError(where, value, "must be printable ASCII on one line")
        out.append((name, value))
    return HTTPServerConfig(http2=_bool(data, "http2", f"{prefix}.http2", True), headers=tuple(out))


def _users(raw: object) -> tuple[tuple[str, str], ...]:
    prefix = "basic_auth_users"
    data = _mapping(raw, prefix)
    users: list[tuple[str, str]] = []
    for user, hashed in data.items():
        where = f"{prefix}.{user}"
        if not user or ":" in user or not user.isprintable():
            # Basic auth sends "user:password"; a colon in the name can never match.
            raise ConfigError(where, user, "user names must be printable and contain no colon")
        if not isinstance(hashed, str):
            raise ConfigError(where, _SECRET, "must be a bcrypt hash string, e.g. $2y$10$...")
        match = _BCRYPT_RE.fullmatch(hashed)
        if match is None:
            # Never echo the value: it may be a plain-text password pasted by mistake.
            raise ConfigError(
                where, _SECRET, "is not a bcrypt hash (make one with: pqd hash-password)"
            )
        if not 4 <= int(match[1]) <= 31:
            raise ConfigError(where, _SECRET, "bcrypt cost must be from 4 to 31")
        users.append((user, hashed))
    return tuple(users)


def _go_duration(value: object, where: str) -> float:
    """Seconds in a Go duration ("1s", "1m30s", "250ms", "0"); yaml.v2 also takes an integer of
    nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value / 1e9
    elif isinstance(value, str):
        if value == "0":
            return 0.0
        pos, seconds = 0, 0.0
        text = value.removeprefix("+")
        for match in _GO_DURATION_PART.finditer(text):
            if match.start() != pos or match[1] in ("", "."):
                break
            seconds += float(match[1]) * _GO_UNIT_SECONDS[match[2]]
            pos = match.end()
        if pos != len(text) or not text:
            raise ConfigError(where, value, 'must be a duration like "1s", "250ms" or "1m30s"')
    else:
        raise ConfigError(where, value, 'must be a duration like "1s", "250ms" or "1m30s"')
    if seconds < 0:
        raise ConfigError(where, value, "must not be negative")
    return seconds


def _rate_limit(raw: object) -> RateLimit | None:
    prefix = "rate_limit"
    data = _mapping(raw, prefix)
    _check_keys(data, _RATE_LIMIT_KEYS, prefix)
    interval = _go_duration(data.get("interval", 0), f"{prefix}.interval")
    burst = data.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise ConfigError(f"{prefix}.burst", burst, "must be an integer of 0 or more")
    if interval == 0:  # the toolkit's "set to 0 to disable"
        return None
    if burst < 1:
        raise ConfigError(
            f"{prefix}.burst",
            burst,
            "must be at least 1 when interval is set (else no request is ever let through)",
        )
    return RateLimit(interval=interval, burst=burst)


# --------------------------------------------------------------------------------------------------
# Public entry points


def web_config_from_yaml(
    text: str, *, base_dir: str | None = None, source: str = "<web-config>"
) -> WebConfig:
    """Parse and validate a web config. Relative file paths are joined with ``base_dir`` (the
    toolkit resolves them against the config file's directory); ``source`` names the text in
    syntax errors. Does no I/O: whether the files exist is checked by :func:`ssl_context`."""
    data = _mapping(_load_yaml(text, source), source)
    _check_keys(data, _TOP_KEYS, "")
    return WebConfig(
        tls=_tls_config(data.get("tls_server_config"), base_dir),
        http=_http_config(data.get("http_server_config")),
        basic_auth_users=_users(data.get("basic_auth_users")),
        rate_limit=_rate_limit(data.get("rate_limit")),
    )


def web_config_from_file(path: str) -> WebConfig:
    """Read and validate a web config file; a missing or unreadable file is a ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(path, path, f"cannot read web config: {err.strerror or err}") from None
    except ValueError as err:  # e.g. a NUL byte in the path
        raise ConfigError(path, path, f"cannot read web config: {err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, path, f"web config larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, path, f"not UTF-8 text (byte {err.start})") from None
    return web_config_from_yaml(text, base_dir=os.path.dirname(path) or ".", source=path)


def referenced_files(config: WebConfig) -> tuple[str, ...]:
    """The certificate files a config names: a change to any of them is a change of config."""
    tls = config.tls
    if tls is None:
        return ()
    return tuple(p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None)


def _read_text(path: str, where: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as err:
        problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(where, path, f"cannot read: {problem}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(where, path, f"larger than {MAX_FILE_BYTES} bytes; not a PEM file")
    return data.decode("latin-1")  # PEM is ASCII; latin-1 never fails and keeps bytes


@contextmanager
def _pem_path(text: str) -> Iterator[str]:
    """A path holding ``text`` for as long as needed: ssl loads keys only from files.

    An anonymous memory file when the platform has one (the key never touches a disk), else a
    private temporary directory.
    """
    memfd_create: Callable[..., int] | None = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("pqd-pem", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, text.encode("latin-1", "replace"))
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="pqd-pem-") as tmp:
        path = os.path.join(tmp, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(text)
        yield path


def _ssl_problem(err: ssl.SSLError) -> str:
    return str(err.reason or err.strerror or err).replace("_", " ").lower()


def ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context for ``tls``: reads the certificate, key and CA files now, so a missing or
    broken file is a ConfigError here (at start, or when a rotated file is picked up)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    # pqd speaks HTTP/1.1 only; saying so lets an HTTP/2-capable client settle on it at once.
    ctx.set_alpn_protocols(["http/1.1"])
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    openssl_names = [n for n in (CIPHER_SUITES[c] for c in tls.cipher_suites) if n is not None]
    if openssl_names:
        try:
            ctx.set_ciphers(":".join(openssl_names))
        except ssl.SSLError as err:
            raise ConfigError(
                "tls_server_config.cipher_suites",
                list(tls.cipher_suites),
                f"none of these is available in this OpenSSL: {_ssl_problem(err)}",
            ) from None

    cert_where = "tls_server_config.cert_file" if tls.cert_file else "tls_server_config.cert"
    key_where = "tls_server_config.key_file" if tls.key_file else "tls_server_config.key"
    cert_text = _read_text(tls.cert_file, cert_where) if tls.cert_file else (tls.cert or "")
    key_text = _read_text(tls.key_file, key_where) if tls.key_file else (tls.key or "")
    cert_shown = tls.cert_file or "<inline PEM>"
    key_shown = tls.key_file or _SECRET
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(cert_where, cert_shown, "holds no PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_text)
    except (ssl.SSLError, ValueError) as err:
        problem = _ssl_problem(err) if isinstance(err, ssl.SSLError) else str(err)
        raise ConfigError(
            cert_where, cert_shown, f"not a valid PEM certificate: {problem}"
        ) from None

    def no_passphrase() -> bytes:
        # Without this, OpenSSL would prompt for a passphrase on the terminal and block.
        raise ConfigError(key_where, key_shown, "the key is encrypted; pqd needs it unencrypted")

    with _pem_path(cert_text) as cert_path, _pem_path(key_text) as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path, password=no_passphrase)
        except ssl.SSLError as err:
            if err.reason == "KEY_VALUES_MISMATCH":
                problem = "does not match the certificate"
            else:
                problem = f"not a valid PEM private key: {_ssl_problem(err)}"
            raise ConfigError(key_where, key_shown, problem) from None

    if tls.client_auth_type in _VERIFYING_CLIENT_AUTH:
        ctx.verify_mode = (
            ssl.CERT_REQUIRED
            if tls.client_auth_type == "RequireAndVerifyClientCert"
            else ssl.CERT_OPTIONAL
        )
        if tls.client_ca_file:
            ca_where = "tls_server_config.client_ca_file"
            ca_text = _read_text(tls.client_ca_file, ca_where)
            ca_shown = tls.client_ca_file
        elif tls.client_ca:
            ca_where, ca_text, ca_shown = (
                "tls_server_config.client_ca",
                tls.client_ca,
                "<inline PEM>",
            )
        else:
            ca_where, ca_text, ca_shown = "", "", ""
        if ca_where:
            try:
                ctx.load_verify_locations(cadata=ca_text)
            except (ssl.SSLError, ValueError) as err:
                problem = _ssl_problem(err) if isinstance(err, ssl.SSLError) else str(err)
                raise ConfigError(
                    ca_where, ca_shown, f"no usable CA certificate: {problem}"
                ) from None
        else:
            # Go verifies client certificates against the system roots when no CA is given.
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_matches_sans(peer_cert: Mapping[str, object], allowed: tuple[str, ...]) -> bool:
    """Whether a verified client certificate (``SSLObject.getpeercert()``) has a subject
    alternative name in ``allowed``, compared as the toolkit does (DNS, email, IP, URI)."""
    wanted = {_normal_san(s) for s in allowed}
    sans = peer_cert.get("subjectAltName", ())
    if not isinstance(sans, tuple):
        return False
    for entry in sans:
        if (
            isinstance(entry, tuple)
            and len(entry) == 2
            and isinstance(entry[1], str)
            and _normal_san(entry[1].strip()) in wanted
        ):
            return True
    return False


def _normal_san(value: str) -> str:
    # Python prints IPv6 addresses uncompressed and upper-case, Go compressed and lower-case.
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


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
