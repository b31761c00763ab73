"""What every HTML page of pqd shares: the frame, the style sheet, escaping, formatting, links.

Every value that reaches a page goes through :func:`escape`: probe names, cycle ids, details and
process names may hold any printable text, HTML included.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

from pqd.results import CycleResult

CYCLES_PREFIX: Final = "/cycles/"
PROBES_PREFIX: Final = "/probes/"

# Fonts with the full-width forms (the trace's U+FF1A colon, probe names in any script), one or
# more on each system: macOS, Windows, then Debian's CJK packages, before the generic family.
_WIDE_FONTS: Final = (
    '"Hiragino Sans", "PingFang SC", "Microsoft YaHei", "Yu Gothic", "MS Gothic", '
    '"Noto Sans CJK SC", "WenQuanYi Micro Hei", "Droid Sans Fallback"'
)
_WIDE_MONO_FONTS: Final = (
    '"Noto Sans Mono CJK SC", "WenQuanYi Micro Hei Mono", "Droid Sans Fallback", '
    '"Hiragino Sans", "PingFang SC", "Microsoft YaHei", "MS Gothic"'
)

CSS: Final = f"""
* {{ box-sizing: border-box; }}
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       "Noto Sans", "DejaVu Sans", {_WIDE_FONTS}, sans-serif;
       margin: 0; color: #222; line-height: 1.35; }}
header {{ background: #e6522c; color: #fff; padding: 0.4em 1em; display: flex; flex-wrap: wrap;
         align-items: baseline; gap: 0.2em 1.5em; }}
header h1 {{ margin: 0; font-size: 1.4em; }}
header a {{ color: #fff; }}
header nav a {{ margin-right: 0.9em; white-space: nowrap; }}
main {{ padding: 0 1em 1em; }}
h2, h3, h4, p {{ overflow-wrap: anywhere; }}
.scroll {{ overflow-x: auto; margin: 0.5em 0 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.name {{ overflow-wrap: anywhere; min-width: 7em; max-width: 22em; }}
td.detail {{ overflow-wrap: anywhere; min-width: 12em; max-width: 40em; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
table.stuck td, table.cycles td {{ white-space: nowrap; }}
table.cycles td.name {{ white-space: normal; }}
table.stuck td.note {{ white-space: normal; min-width: 14em; max-width: 40em; }}
.label {{ font-weight: bold; letter-spacing: 0.03em; }}
tr.failing {{ background: #f4a3a3; }}
tr.failing .label {{ color: #7a0000; }}
tr.ok .label {{ color: #1d5e20; }}
tr.failed td {{ background: #fde8e8; }}
p.verdict {{ font-size: 1.1em; margin: 0.6em 0 0.2em; }}
p.verdict.failing {{ color: #7a0000; }}
.filters a, .filters strong, .pager a {{ white-space: nowrap; }}
.filters strong {{ padding: 0 0.2em; }}
.build {{ color: #555; font-size: 0.85em; }}
pre {{ background: #f6f6f6; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto;
      font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
      "Liberation Mono", {_WIDE_MONO_FONTS}, monospace; }}
code {{ font-size: 0.95em; overflow-wrap: anywhere; }}
/* A phone: the status table's rows stack, a labelled line a cell, so each probe's status, the
   time since its last success and its schedule read without scrolling sideways (its nine
   columns were 968 px wide in a 343 px box at 390 px). */
@media (max-width: 40em) {{
  table.status, table.status tbody, table.status tr, table.status td {{ display: block; }}
  table.status tr:first-child {{ display: none; }}
  table.status tr {{ border: 1px solid #ccc; margin-bottom: 0.6em; }}
  table.status td {{ border: 0; min-width: 0; max-width: none; text-align: left;
                     white-space: normal; }}
  table.status td::before {{ content: attr(data-label) ": "; font-weight: bold; }}
}}
"""

# Setting names that could hold a credential. No setting of pqd does today (a path to a web
# config file is not one); whatever the daemon passes, a page never shows such a value.
_SECRET_NAME: Final = re.compile(r"pass|secret|token|credential|private|api_?key", re.IGNORECASE)
REDACTED: Final = "(not shown: may be a secret)"


def escape(value: object) -> str:
    """Escape anything for HTML text and attribute values alike."""
    return html.escape(str(value), quote=True)


def utc(timestamp: float) -> str:
    try:
        moment = datetime.fromtimestamp(timestamp, tz=UTC)
    except (ValueError, OverflowError, OSError):
        # A timestamp the platform cannot convert (NaN, far future) still deserves a page.
        return str(timestamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def seconds(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f} s"


def age(elapsed: float) -> str:
    """How long ago, to the second, in the two largest units: "3 min 20 s ago"."""
    if not math.isfinite(elapsed):
        return "unknown"
    rest = max(0, int(elapsed))  # a clock step backwards is "0 s ago", not a negative age
    if rest < 60:
        return f"{rest} s ago"
    minutes, secs = divmod(rest, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min ago"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h ago"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outcome(result: CycleResult) -> str:
    if result.success:
        return "ok"
    return f"failed: {result.reason or 'unknown'}"


def cycle_href(base: str, cycle_id: str) -> str:
    return f"{base}{CYCLES_PREFIX}{quote(cycle_id, safe='')}"


def probe_href(base: str, name: str) -> str:
    # safe='': a "/", "+" or "?" in a name stays part of the one path segment.
    return f"{base}{PROBES_PREFIX}{quote(name, safe='')}"


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def scrolling(table: str) -> str:
    """A table in a box that scrolls sideways, so a wide table never widens a phone's page."""
    return f'<div class="scroll">{table}</div>'


def kv_table(rows: Iterable[tuple[str, str]], table_class: str = "") -> str:
    """A two-column table; both columns are escaped here."""
    cells = "".join(
        f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in rows
    )
    opening = f'<table class="{escape(table_class)}">' if table_class else "<table>"
    return scrolling(f"{opening}{cells}</table>")


def settings_table(rows: Iterable[tuple[str, str]]) -> str:
    """Configuration rows with anything that could be a credential replaced by REDACTED."""
    return kv_table((key, REDACTED if _SECRET_NAME.search(key) else value) for key, value in rows)


def page(title: str, base: str, body: str) -> str:
    nav = " ".join(
        link(f"{base}{path}", text)
        for path, text in (
            ("/", "Status"),
            ("/config", "Config"),
            ("/metrics", "Metrics"),
            ("/-/healthy", "Healthy"),
            ("/-/ready", "Ready"),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1><a href="{escape(base)}/">pqd</a></h1><nav>{nav}</nav></header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
