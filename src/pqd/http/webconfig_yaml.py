"""exporter-toolkit's web config YAML, decoded as Go's go.yaml.in/yaml/v2 ``UnmarshalStrict``
decodes it into the toolkit's structs (tls_config.go), not as PyYAML would.

A string field takes any scalar as written (``X-XSS-Protection: 1`` is "1"), a bool takes YAML
1.1 words (``yes``, ``on``, ``y``) but not quoted text, null is Go's zero value; an unknown or
duplicated key is an error. :func:`decode_web_config` returns plain dicts and tuples of the
decoded values; pqd.http.webconfig applies the toolkit's checks to them.
"""

from __future__ import annotations

import decimal
import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from pqd.errors import SECRET, ConfigError, did_you_mean
from pqd.http.webconfig_tls import CIPHER_SUITES, CURVES, TLS_VERSIONS

__all__ = ["choice", "decode_web_config"]

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
        raise ConfigError(where, SECRET if secret else _shown(node), "must be a string")
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


def choice(value: str, where: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ConfigError(where, value, f"unknown {what} ({did_you_mean(value, choices)})")
    return value


def _enum(node: _Node, where: str, choices: tuple[str, ...], what: str) -> str | None:
    """The toolkit's TLSVersion, Cipher and Curve: UnmarshalYAML reads a string and looks it up
    (exact case); yaml.v2 does not call it for null, which leaves Go's zero value (None)."""
    value = _go_str(node, where)
    return None if value is None else choice(value, where, choices, what)


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
                    path, _shown(value), f"unknown key ({did_you_mean(key, tuple(fields))})"
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


def decode_web_config(text: str, source: str) -> Mapping[str, Any]:
    """The document's keys and their decoded values (nested dicts for the structs); ``source``
    names the text in syntax errors."""
    root = _load_yaml(text, source)
    if root is not None and root.id != "mapping" and not _is_null(root):
        raise ConfigError(source, _shown(root), "must be a mapping of keys to values")
    data: Mapping[str, Any] = _DECODERS["Config"](root, "")  # type: ignore[assignment]
    return data
