"""Bounds on what reaches the TOML parser: how many dotted parts a key has and how deeply arrays
and inline tables nest, checked in one linear pass before ``tomllib`` sees the text.

tomllib's cost grows with the square of a key's depth (a 20 KB file of one 10,000-part dotted key
takes 400 MB) and it recurses per nesting level, so a file well inside the size cap could take
the daemon's memory or stack. pqd's own settings are at most three parts deep
(``probes.NAME.environment``) and nest no values, so the bounds below only ever refuse hostile or
broken files. The scan understands just enough TOML (strings, comments, keys, brackets) to find
keys and nesting; anything it does not understand it leaves to tomllib to report.
"""

from __future__ import annotations

from typing import Final

from pqd.errors import NO_VALUE, ConfigError

#: Most dotted parts in one key or table header (``[probes.p]`` has 2).
MAX_KEY_PARTS: Final = 16
#: Deepest nesting of arrays and inline tables in one value.
MAX_NESTING: Final = 16
#: Most keys and table headers in a file, most dotted parts over all of them, and most arrays and
#: inline tables: tomllib spends about 150 bytes of memory per byte of many small keys, so the cap
#: on the file's size alone would still let 1 MiB of them cost 170 MB. pqd's largest sensible
#: file (MAX_PROBES probes of every setting) has about 4,000 keys of 3 parts.
MAX_KEYS: Final = 8192
MAX_TOTAL_PARTS: Final = 24576
MAX_BRACKETS: Final = 8192
#: Longest key, quotes and dots included, and most items in all arrays: tomllib spends 45 MB on
#: one 1 MiB key and 1.2 s on one array of 500,000 zeros.
MAX_KEY_CHARS: Final = 4096
MAX_ARRAY_ITEMS: Final = 65536

_BARE_KEY: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SPACE: Final = " \t"


class _Scan:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.i = 0
        self.brackets: list[str] = []  # open "[" and "{" of the value being read
        self.keys = 0
        self.parts = 0
        self.opened = 0
        self.items = 0

    def refuse(self, what: str) -> ConfigError:
        line = self.text.count("\n", 0, self.i) + 1
        return ConfigError(self.source, NO_VALUE, f"invalid TOML at line {line}: {what}")

    def skip_string(self) -> None:
        """Past the string starting at i (basic, literal, single- or multi-line)."""
        quote = self.text[self.i]
        triple = self.text.startswith(quote * 3, self.i)
        end_mark = quote * 3 if triple else quote
        j = self.i + len(end_mark)
        while True:
            end = self.text.find(end_mark, j)
            if end < 0 or (not triple and "\n" in self.text[j:end]):
                self.i = len(self.text) if end < 0 else self.text.index("\n", j)
                return  # unterminated: tomllib says so
            if quote == '"' and _escaped(self.text, end):
                j = end + 1
                continue
            self.i = end + len(end_mark)
            while triple and self.text.startswith(quote, self.i):  # up to 2 quotes of content
                self.i += 1
            return

    def skip_space(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in _SPACE:
            self.i += 1

    def key(self) -> None:
        """Past a dotted key at i, refusing one of more than MAX_KEY_PARTS parts."""
        parts, start = 0, self.i
        while self.i < len(self.text):
            self.skip_space()
            char = self.text[self.i : self.i + 1]
            if char in ('"', "'"):
                self.skip_string()
            elif char and char in _BARE_KEY:
                while self.i < len(self.text) and self.text[self.i] in _BARE_KEY:
                    self.i += 1
            else:
                return
            parts += 1
            self.parts += 1
            if parts == 1:
                self.keys += 1
                if self.keys > MAX_KEYS:
                    raise self.refuse(f"more than {MAX_KEYS} keys and tables")
            if parts > MAX_KEY_PARTS:
                raise self.refuse(f"a key of more than {MAX_KEY_PARTS} dotted parts")
            if self.parts > MAX_TOTAL_PARTS:
                raise self.refuse(f"more than {MAX_TOTAL_PARTS} dotted key parts in all")
            if self.i - start > MAX_KEY_CHARS:
                raise self.refuse(f"a key longer than {MAX_KEY_CHARS} characters")
            self.skip_space()
            if not self.text.startswith(".", self.i):
                return
            self.i += 1

    def statement(self) -> None:
        """A line's table header or key, up to its value."""
        if self.text.startswith("[", self.i):
            self.i += 2 if self.text.startswith("[[", self.i) else 1
            self.key()
            return
        self.key()

    def value_char(self) -> bool:
        """Take in the value character at i; True when a key comes next."""
        char = self.text[self.i]
        if char in ('"', "'"):
            self.skip_string()
            return False
        self.i += 1
        if char in "[{":
            self.brackets.append(char)
            self.opened += 1
            if self.opened > MAX_BRACKETS:
                raise self.refuse(f"more than {MAX_BRACKETS} arrays and inline tables")
            if len(self.brackets) > MAX_NESTING:
                raise self.refuse(f"arrays or inline tables nested more than {MAX_NESTING} deep")
            return char == "{"
        if char in "]}":
            if self.brackets:
                self.brackets.pop()
            return False
        if char == "#":
            end = self.text.find("\n", self.i)
            self.i = len(self.text) if end < 0 else end
            return False
        if char == "\n" and not self.brackets:
            self.skip_blank()
            return False
        if char == "," and self.brackets[-1:] == ["["]:
            self.items += 1
            if self.items > MAX_ARRAY_ITEMS:
                raise self.refuse(f"more than {MAX_ARRAY_ITEMS} array items in all")
        return char == "," and self.brackets[-1:] == ["{"]

    def skip_blank(self) -> None:
        """Past blank and comment lines; then the next line's statement."""
        while self.i < len(self.text):
            self.skip_space()
            if self.text.startswith("#", self.i):
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            if self.text.startswith(("\n", "\r\n"), self.i):
                self.i += 1 if self.text[self.i] == "\n" else 2
                continue
            break
        self.statement()

    def run(self) -> None:
        self.skip_blank()
        while self.i < len(self.text):
            if self.value_char():
                self.key()


def _escaped(text: str, at: int) -> bool:
    """Whether the character at ``at`` follows an odd number of backslashes."""
    count = 0
    while at - count - 1 >= 0 and text[at - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def check(text: str, source: str) -> None:
    """Raise ConfigError (one line, naming ``source`` and the line) if a key or a value of
    ``text`` is beyond the bounds above; else return, whether the TOML is valid or not."""
    _Scan(text, source).run()
