"""Hostile pqd.toml files: small or cap-sized files built to make a TOML parser slow, deep or
hungry, or an error message huge. Each is refused by pqd as one line (docs/reliability.md,
"Hostile config files"); the config table tests, the reload fuzz test, the real-systemd reload
tests and benchmarks/hostile_config.py all take them from here.

Every file is at most the config size cap (1 MiB) unless its name says ``over-cap``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: The config file size cap (pqd.config.load.MAX_CONFIG_BYTES), written out so this helper does not
#: depend on the code under test.
CAP: Final = 1024 * 1024
#: The size of the file the issue reproduced with first: 1,000 dotted parts in about 2 KB.
SMALL: Final = 2 * 1024


@dataclass(frozen=True)
class HostileConfig:
    name: str
    data: bytes
    #: What the file is, in a few words (for docs/reliability.md and test ids).
    what: str

    def write(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


def _fill(unit: str, size: int, *, head: str = "", tail: str = "") -> str:
    """``head`` + ``unit`` repeated + ``tail``, at most ``size`` bytes (ASCII units)."""
    count = max(1, (size - len(head) - len(tail)) // len(unit))
    return head + unit * count + tail


def _dotted(parts: int) -> str:
    return ".".join(["a"] * parts)


def _parts_for(size: int, overhead: int) -> int:
    return max(2, (size - overhead) // 2)


def _deep_key(size: int) -> str:
    return _dotted(_parts_for(size, 8)) + " = 1\n"


def _deep_header(size: int) -> str:
    return f"[probes.p.{_dotted(_parts_for(size, 16))}]\n"


def _deep_key_in_probes(size: int) -> str:
    return f"[probes]\np.{_dotted(_parts_for(size, 16))} = 1\n"


def _deep_array_of_tables(size: int) -> str:
    return f"[[{_dotted(_parts_for(size, 8))}]]\n"


def _deep_arrays(size: int) -> str:
    depth = (size - 8) // 2
    return "x = " + "[" * depth + "]" * depth + "\n"


def _deep_arrays_unclosed(size: int) -> str:
    return _fill("[", size, head="x = ", tail="\n")


def _deep_inline_tables(size: int) -> str:
    depth = (size - 8) // 6
    return "x = " + "{a = " * depth + "1" + "}" * depth + "\n"


def _deep_key_in_inline_table(size: int) -> str:
    return "x = {" + _dotted(_parts_for(size, 12)) + " = 1}\n"


def _numbered_lines(template: str, size: int) -> str:
    """``template`` formatted with 0, 1, 2, ... one line each, as many as fit in ``size``."""
    lines, total, i = [], 0, 0
    while total + len(line := template.format(i)) <= size:
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)


def _many_deep_keys(size: int) -> str:
    """Distinct keys, each 8 parts deep: depth within any sane bound, count not."""
    return _numbered_lines("k{}.a.a.a.a.a.a.a = 1\n", size)


def _many_deep_tables(size: int) -> str:
    return _numbered_lines("[t{}.a.a.a.a.a.a.a]\n", size)


def _many_keys(size: int) -> str:
    return _numbered_lines("k{} = 1\n", size)


def _many_probes(size: int) -> str:
    return _numbered_lines("[probes.p{}]\n", size)


def _long_key(size: int) -> str:
    return _fill("k", size, head='"', tail='" = 1\n')


def _long_dotted_quoted_key(size: int) -> str:
    part = '"' + "k" * 1000 + '"'
    parts = max(2, (size - 8) // (len(part) + 1))
    return ".".join([part] * parts) + " = 1\n"


def _wide_array(size: int) -> str:
    return _fill("0,", size, head="x = [", tail="0]\n")


def _wide_array_of_inline_tables(size: int) -> str:
    return _fill("{},", size, head="x = [", tail="{}]\n")


def _many_array_tables(size: int) -> str:
    return _fill("[[x]]\n", size)


def _long_string(size: int) -> str:
    return _fill("x", size, head='log_level = "', tail='"\n')


def _many_escapes(size: int) -> str:
    return _fill("\\U0001F600", size, head='log_level = "', tail='"\n')


def _long_line_syntax_error(size: int) -> str:
    return _fill("x", size, head="log_level = ", tail="\n")


def _redefined_deep_namespace(size: int) -> str:
    """tomllib's error message carries the whole key: 'Cannot redefine namespace (...)'."""
    key = _dotted(_parts_for(size // 2, 16))
    return f"[{key}]\n[x]\n{key}.b = 1\n"


def _long_value_repr(size: int) -> str:
    """A value of the wrong type whose repr() is huge (a wide inline table)."""
    head, tail = "[probes.p]\nworkers = {", "}\n"
    items, total, i = [], len(head) + len(tail), 0
    while total + len(f"k{i} = {i}, ") <= size:
        items.append(f"k{i} = {i}")
        total += len(items[-1]) + 2
        i += 1
    return head + ", ".join(items) + tail


def _nul_byte(size: int) -> str:
    return _fill("\0", size, head='log_level = "', tail='"\n')


_TEXT_FAMILIES: Final[tuple[tuple[str, Callable[[int], str], str], ...]] = (
    ("deep-key", _deep_key, "one dotted key a.a.a....a = 1"),
    ("deep-header", _deep_header, "one table header [probes.p.a.a....]"),
    ("deep-key-in-probes", _deep_key_in_probes, "[probes] then p.a.a....a = 1"),
    ("deep-array-of-tables", _deep_array_of_tables, "one header [[a.a....a]]"),
    ("deep-arrays", _deep_arrays, "x = [[[...]]], nested arrays"),
    ("deep-arrays-unclosed", _deep_arrays_unclosed, "x = [[[[... never closed"),
    ("deep-inline-tables", _deep_inline_tables, "x = {a = {a = ...}}, nested inline tables"),
    ("deep-key-in-inline-table", _deep_key_in_inline_table, "x = {a.a....a = 1}"),
    ("many-deep-keys", _many_deep_keys, "distinct keys kN.a.a.a.a.a.a.a = 1"),
    ("many-deep-tables", _many_deep_tables, "distinct headers [tN.a.a.a.a.a.a.a]"),
    ("many-keys", _many_keys, "distinct top-level keys kN = 1"),
    ("many-probes", _many_probes, "distinct probe tables [probes.pN]"),
    ("long-key", _long_key, 'one quoted key "kkk..." = 1'),
    ("long-dotted-quoted-key", _long_dotted_quoted_key, "a key of 1000-character quoted parts"),
    ("wide-array", _wide_array, "x = [0, 0, ...]"),
    ("wide-array-of-inline-tables", _wide_array_of_inline_tables, "x = [{}, {}, ...]"),
    ("many-array-tables", _many_array_tables, "[[x]] repeated"),
    ("long-string", _long_string, 'log_level = "xxx..."'),
    ("many-escapes", _many_escapes, 'log_level = "\\U0001F600..."'),
    ("long-line-syntax-error", _long_line_syntax_error, "log_level = xxx... (not a value)"),
    ("redefined-deep-namespace", _redefined_deep_namespace, "a deep table redefined by a key"),
    ("long-value-repr", _long_value_repr, "workers = {k0 = 0, k1 = 1, ...}"),
    ("nul-bytes", _nul_byte, 'log_level = "\\0\\0..." (raw NUL bytes)'),
)

#: Names of the families, in the order hostile_configs() yields them (each at SMALL, then CAP).
FAMILIES: Final = tuple(name for name, _, _ in _TEXT_FAMILIES)


def hostile_configs(sizes: tuple[int, ...] = (SMALL, CAP)) -> tuple[HostileConfig, ...]:
    """Every family at each size (``NAME-2k``, ``NAME-1024k``), then the byte-level ones: a file
    one byte over the cap and a file that is not UTF-8."""
    out = [
        HostileConfig(f"{name}-{size // 1024}k", make(size).encode("utf-8"), what)
        for size in sizes
        for name, make, what in _TEXT_FAMILIES
    ]
    out.append(HostileConfig("over-cap", b"#" * CAP + b"\n", "a comment one byte over the cap"))
    out.append(
        HostileConfig("not-utf8", _fill("\xff", SMALL).encode("latin-1"), "bytes 0xff, not UTF-8")
    )
    return tuple(out)


def hostile_config(name: str) -> HostileConfig:
    """One of :func:`hostile_configs` by name, e.g. ``hostile_config("deep-key-2k")``."""
    family, _, size = name.rpartition("-")
    for config in hostile_configs((int(size[:-1]) * 1024,)) if family in FAMILIES else ():
        if config.name == name:
            return config
    for config in hostile_configs(()):
        if config.name == name:
            return config
    raise KeyError(name)


#: The files whose parse cost the most before pqd bounded what reaches the parser (tomllib's
#: memory grows with the square of a dotted key's depth): benchmarks/hostile_config.py's subject.
WORST: Final = ("deep-key-1024k", "deep-header-1024k", "many-deep-keys-1024k")
