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
Every problem is one :class:`~pqd.config.ConfigError` naming the key as a dotted path, e.g.
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

import decimal
import difflib
import functools
import ipaddress
import math
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

# The Go type of every key, from tls_config.go (Config, TLSConfig, HTTPConfig, RateLimiterConfig),
# decoded as go.yaml.in/yaml/v2's UnmarshalStrict does: see _DECODERS for what each accepts.
_SCHEMA: Final[Mapping[str, Mapping[str, str]]] = {
    "Config": {
        "tls_server_config": "TLSConfig",
        "http_server_config": "HTTPConfig",
        "rate_limit": "RateLimiterConfig",
        "basic_auth_users": "map[string]Secret",
    },
    "TLSConfig": {
        "cert": "string",
        "key": "Secret",
        "client_ca": "string",
        "cert_file": "string",
        "key_file": "string",
        "client_auth_type": "string",
        "client_ca_file": "string",
        "cipher_suites": "[]Cipher",
        "curve_preferences": "[]Curve",
        "min_version": "TLSVersion",
        "max_version": "TLSVersion",
        "prefer_server_cipher_suites": "bool",
        "client_allowed_sans": "[]string",
    },
    "HTTPConfig": {"http2": "bool", "headers": "map[string]string"},
    "RateLimiterConfig": {"burst": "int", "interval": "time.Duration"},
}
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

# yaml.v2's resolve.go: the plain scalars it reads as null, booleans (YAML 1.1, "y"/"n" included),
# special floats and numbers. Quoted and block scalars are always strings.
_GO_NULLS: Final = ("", "~", "null", "Null", "NULL")
_GO_BOOLS: Final[Mapping[str, bool]] = {
    **dict.fromkeys(
        ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True
    ),
    **dict.fromkeys(
        ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False
    ),
}
_GO_FLOAT_WORDS: Final[Mapping[str, float]] = {
    **{w: float("nan") for w in (".nan", ".NaN", ".NAN")},
    **{s + w: float(s + "inf") for s in ("", "+", "-") for w in (".inf", ".Inf", ".INF")},
}
_YAML_FLOAT: Final = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# strconv.ParseInt(s, 0, 64): a sign, then hex, octal ("0o17" or "017"), binary or decimal.
_GO_INT: Final = re.compile(
    r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)"
)
_INT64: Final = 1 << 63
# Go's time.ParseDuration, which yaml.v2 uses for a time.Duration given as a string.
_GO_DURATION_PART: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_NS: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
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
# YAML, decoded as Go's yaml.v2 UnmarshalStrict decodes it into the toolkit's structs

_Node = Any  # a yaml.Node; PyYAML is imported on first use only


def _load_yaml(text: str, source: str) -> _Node | None:
    """The node tree: values are decoded from it by Go's rules, not by PyYAML's."""
    import yaml

    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)  # a SafeLoader: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        line = ""
        if mark is not None:
            lines = text.splitlines()
            line = lines[mark.line][:200] if mark.line < len(lines) else ""
        raise ConfigError(source, line, f"invalid YAML{where}: {problem}") from None


def _shown(node: _Node) -> object:
    return node.value if node.id == "scalar" else f"<{node.id}>"


def _resolve(node: _Node) -> object:
    """What yaml.v2 makes of a scalar: None, a bool, an int, a float, or else its text."""
    text: str = node.value
    if node.style is not None:  # quoted or block
        return text
    if text in _GO_NULLS:
        return None
    if text in _GO_BOOLS:
        return _GO_BOOLS[text]
    if text in _GO_FLOAT_WORDS:
        return _GO_FLOAT_WORDS[text]
    if text[:1] == "." and _YAML_FLOAT.fullmatch(text):
        return float(text)
    if text[:1] not in ("+", "-", *"0123456789"):
        return text
    plain = text.replace("_", "")
    match = _GO_INT.fullmatch(plain)
    if match is not None:
        digits = match[2]
        base = 8 if digits[0] == "0" and digits[1:2].isdigit() else 0  # "017"
        number = int(digits, base) * (-1 if match[1] == "-" else 1)
        if -_INT64 <= number < _INT64 or (not match[1] and number < 2 * _INT64):
            return number  # int64, or uint64 without a sign
    if _YAML_FLOAT.fullmatch(plain):
        return float(plain)
    return text


def _is_null(node: _Node) -> bool:
    return node.id == "scalar" and _resolve(node) is None


def _go_str(node: _Node, where: str, *, secret: bool = False) -> str | None:
    """A Go string (or config.Secret): yaml.v2 takes any scalar as written, so ``1`` is "1" and
    ``true`` is "true"; None for null (Go's zero value, "")."""
    if node.id != "scalar":
        raise ConfigError(where, _SECRET if secret else _shown(node), "must be a string")
    return None if _is_null(node) else str(node.value)


def _go_bool(node: _Node, where: str) -> bool:
    value = _resolve(node) if node.id == "scalar" else node
    if value is None or isinstance(value, bool):
        return bool(value)  # null is Go's zero value, false
    raise ConfigError(where, _shown(node), "must be true or false")


def _go_int64(node: _Node, where: str, *, duration: bool = False) -> int:
    """A Go int (64 bits) or time.Duration (in ns): yaml.v2 takes an integer, truncates a float,
    and for a duration parses a string with time.ParseDuration."""
    value = _resolve(node) if node.id == "scalar" else node
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    if isinstance(value, float) and not math.isnan(value) and value <= _INT64:
        return int(value) if -_INT64 <= value < _INT64 else -_INT64  # Go's int64() on amd64
    if isinstance(value, str) and duration:
        return _go_duration(value, where)
    problem = (
        'must be a duration like "1s", "250ms" or "1m30s"' if duration else "must be an integer"
    )
    raise ConfigError(where, _shown(node), problem)


def _go_duration(text: str, where: str) -> int:
    """Go's time.ParseDuration, in nanoseconds: "1s", "1m30s", "-1.5h", "0"."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    pos, total = 0, decimal.Decimal(0)
    for match in _GO_DURATION_PART.finditer(body):
        if match.start() != pos or match[1] in ("", "."):
            break
        total += decimal.Decimal(match[1]) * _GO_UNIT_NS[match[2]]
        pos = match.end()
    if pos != len(body) or not body:
        raise ConfigError(where, text, 'must be a duration like "1s", "250ms" or "1m30s"')
    if total >= _INT64:
        raise ConfigError(where, text, "is out of range (Go's durations end at about 292 years)")
    return -int(total) if text.startswith("-") else int(total)


def _go_list(node: _Node, where: str) -> list[_Node] | None:
    """A Go slice: a YAML list, or nil for null."""
    if _is_null(node):
        return None
    if node.id != "sequence":
        raise ConfigError(where, _shown(node), "must be a list of strings")
    return list(node.value)


def _go_map(node: _Node | None, where: str) -> dict[str, _Node]:
    """A Go map or struct: keys are read as strings (``1:`` is "1"); a key given twice is an
    error, as in UnmarshalStrict."""
    if node is None or _is_null(node):
        return {}
    if node.id != "mapping":
        raise ConfigError(
            where or "<web-config>", _shown(node), "must be a mapping of keys to values"
        )
    import yaml

    yaml.SafeLoader("").flatten_mapping(node)  # "<<: *anchor" merge keys, as yaml.v2 does
    out: dict[str, _Node] = {}
    for key_node, value_node in node.value:
        key = _go_str(key_node, f"{where}.<key>" if where else "<key>") or ""
        if key in out:
            raise ConfigError(f"{where}.{key}" if where else key, key, "duplicate key")
        out[key] = value_node
    return out


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]}?" if close else f"known: {', '.join(choices)}"


def _choice(value: str, where: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ConfigError(where, value, f"unknown {what} ({_did_you_mean(value, choices)})")
    return value


def _enum(node: _Node, where: str, choices: tuple[str, ...], what: str) -> str | None:
    """The toolkit's TLSVersion, Cipher and Curve: UnmarshalYAML reads a string and looks it up
    (exact case); yaml.v2 does not call it for null, which leaves Go's zero value (None)."""
    value = _go_str(node, where)
    return None if value is None else _choice(value, where, choices, what)


def _enum_list(choices: tuple[str, ...], what: str) -> Callable[[_Node, str], object]:
    def decode(node: _Node, where: str) -> tuple[str, ...]:
        items = (
            _enum(item, f"{where}[{i}]", choices, what)
            for i, item in enumerate(_go_list(node, where) or ())
        )
        return tuple(item for item in items if item is not None)

    return decode


def _go_string_map(secret: bool) -> Callable[[_Node, str], object]:
    def decode(node: _Node, where: str) -> dict[str, str]:
        items = _go_map(node, where).items()
        return {k: _go_str(v, f"{where}.{k}", secret=secret) or "" for k, v in items}

    return decode


def _struct(name: str) -> Callable[[_Node | None, str], object]:
    def decode(node: _Node | None, where: str) -> dict[str, object]:
        fields = _SCHEMA[name]
        out: dict[str, object] = {}
        for key, value in _go_map(node, where).items():
            path = f"{where}.{key}" if where else key
            if key not in fields:
                raise ConfigError(
                    path, _shown(value), f"unknown key ({_did_you_mean(key, tuple(fields))})"
                )
            out[key] = _DECODERS[fields[key]](value, path)
        return out

    return decode


#: How yaml.v2 decodes a node into each Go type of _SCHEMA.
_DECODERS: Final[Mapping[str, Callable[[_Node, str], object]]] = {
    "string": _go_str,
    "Secret": functools.partial(_go_str, secret=True),
    "bool": _go_bool,
    "int": _go_int64,
    "time.Duration": functools.partial(_go_int64, duration=True),
    "[]string": lambda n, w: (
        None
        if (items := _go_list(n, w)) is None
        else tuple(_go_str(x, f"{w}[{i}]") or "" for i, x in enumerate(items))
    ),
    "TLSVersion": lambda n, w: _enum(n, w, tuple(TLS_VERSIONS), "TLS version"),
    "[]Cipher": _enum_list(tuple(CIPHER_SUITES), "cipher suite"),
    "[]Curve": _enum_list(CURVES, "curve"),
    "map[string]string": _go_string_map(secret=False),
    "map[string]Secret": _go_string_map(secret=True),
    **{name: _struct(name) for name in _SCHEMA},
}


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
    prefix = "tls_server_config"

    def where(key: str) -> str:
        return f"{prefix}.{key}"

    strings: dict[str, str] = {key: data.get(key) or "" for key in _TLS_STRING_KEYS}
    # IsEnabled: any of these switches TLS on; none of them means plain HTTP.
    if not any(strings.values()):
        return None
    if not strings["cert_file"] and not strings["cert"]:
        raise ConfigError(where("cert_file"), "", "missing one of cert or cert_file")
    if not strings["key_file"] and not strings["key"]:
        raise ConfigError(where("key_file"), "", "missing one of key or key_file")
    # Given both, the toolkit reads the file and ignores the inline PEM.
    for inline, path in (
        ("cert", "cert_file"),
        ("key", "key_file"),
        ("client_ca", "client_ca_file"),
    ):
        if strings[path]:
            strings[inline] = ""

    auth = strings["client_auth_type"] or "NoClientCert"
    auth = _CLIENT_AUTH_ALIASES.get(auth, auth)
    _choice(auth, where("client_auth_type"), CLIENT_AUTH_TYPES, "client_auth_type")
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        raise ConfigError(where("client_auth_type"), auth, _UNSUPPORTED_CLIENT_AUTH[auth])
    if (strings["client_ca_file"] or strings["client_ca"]) and auth == "NoClientCert":
        raise ConfigError(
            where("client_auth_type"),
            auth,
            "client_ca_file is set but client certificates are not asked for; "
            "use RequireAndVerifyClientCert",
        )

    sans: tuple[str, ...] | None = data.get("client_allowed_sans")
    if sans is not None and auth != "RequireAndVerifyClientCert":
        raise ConfigError(
            where("client_allowed_sans"),
            list(sans),
            "needs client_auth_type RequireAndVerifyClientCert (a client may otherwise connect "
            "without a certificate to match)",
        )
    if sans == ():
        # Go takes it and then refuses every client; pqd reads no list as "no SAN check".
        raise ConfigError(where("client_allowed_sans"), [], "is empty: no client could connect")

    return TLSServerConfig(
        cert_file=_join_dir(base_dir, strings["cert_file"]),
        key_file=_join_dir(base_dir, strings["key_file"]),
        cert=strings["cert"] or None,
        key=strings["key"] or None,
        client_ca_file=_join_dir(base_dir, strings["client_ca_file"]),
        client_ca=strings["client_ca"] or None,
        client_auth_type=auth,
        client_allowed_sans=sans or (),
        # null is Go's zero value, which crypto/tls reads as its defaults: TLS 1.2 to 1.3.
        min_version=data.get("min_version") or "TLS12",
        max_version=data.get("max_version") or "TLS13",
        cipher_suites=data.get("cipher_suites", ()),
        prefer_server_cipher_suites=data.get("prefer_server_cipher_suites", True),
        curve_preferences=data.get("curve_preferences", ()),
    )


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
                f"this header cannot be set ({_did_you_mean(name, tuple(HEADER_VALUES))})",
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
            raise ConfigError(f"basic_auth_users.{user}", _SECRET, problem)
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
    root = _load_yaml(text, source)
    if root is not None and root.id != "mapping" and not _is_null(root):
        raise ConfigError(source, _shown(root), "must be a mapping of keys to values")
    data: Mapping[str, Any] = _DECODERS["Config"](root, "")  # type: ignore[assignment]
    return WebConfig(
        tls=_tls_config(data.get("tls_server_config", {}), base_dir),
        http=_http_config(data.get("http_server_config", {})),
        basic_auth_users=_users(data.get("basic_auth_users", {})),
        rate_limit=_rate_limit(data.get("rate_limit", {})),
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
