"""The scan before tomllib (pqd.config.toml_bounds): hostile files up to the size cap are one
line and exit 78 from check-config; sensible TOML, however it spells keys, strings and comments,
passes the scan untouched. Time and memory of the worst are measured in
benchmarks/hostile_config.py, not asserted here."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pqd.cli import main
from pqd.config import toml_bounds
from pqd.config.load import config_from_toml
from pqd.errors import ConfigError
from tests.helpers.hostile_configs import CAP, HostileConfig, hostile_configs

REPO = Path(__file__).resolve().parents[3]

#: Valid TOML that only a scan confused by strings, comments or spacing would refuse.
GOOD = {
    "dots in strings": 'a = "' + "x." * 5000 + '"\n',
    "dots in literal strings": "a = '" + "x." * 5000 + "'\n",
    "brackets in strings": 'a = "' + "[" * 100 + "\"\nb = '" + "{" * 100 + "'\n",
    "escaped quotes": 'a = "say \\"' + "[" * 40 + '\\" ok"\nb = "\\\\"\nc = "[[["\n',
    "multi-line strings": 'a = """\n' + "[{." * 300 + "\n\"\"\"\nb = '''\n" + "x." * 50 + "'''\n",
    "multi-line string ending in quotes": 'a = """x""""\nb = 1\n',
    "comments": "# " + "a." * 500 + "\na = 1 # [[[[[[[[[[[[[[[[[[[[[[[[\n",
    "arrays over lines": "a = [\n  [1, 2],  # [[[\n  [3, 4],\n]\nb = 2\n",
    "inline tables": "a = { b.c = 1, d = { e = [1, { f = 2 }] } }\n",
    "quoted keys": '"a.b"."c.d".e = 1\n[probes."my.probe"]\n',
    "spaced keys": "a . b . c = 1\n[ x . y ]\nz = 1\n",
    "CRLF": "a = 1\r\n[t]\r\nb.c = 2\r\n",
    "16-part key": ".".join(["k"] * 16) + " = 1\n",
    "16 deep": "a = " + "[" * 16 + "]" * 16 + "\n",
    "4,096-character key": "k" * 4096 + " = 1\n",
    "65,536 array items": "a = [" + "0," * 65535 + "0]\n",
    "the shipped example": (REPO / "systemd" / "pqd.toml").read_text(),
}

#: Past one bound by one: refused by the scan, naming the bound.
ONE_PAST = {
    "17-part key": (".".join(["k"] * 17) + " = 1\n", "more than 16 dotted parts"),
    "17 deep": ("a = " + "[" * 17 + "]" * 17 + "\n", "nested more than 16 deep"),
    "17-part header": ("[" + ".".join(["t"] * 17) + "]\n", "more than 16 dotted parts"),
    "8,193 keys": ("".join(f"k{n} = 1\n" for n in range(8193)), "more than 8192 keys"),
    "4,097-character key": ("k" * 4097 + " = 1\n", "a key longer than 4096 characters"),
    "65,537 array items": ("a = [" + "0," * 65537 + "0]\n", "more than 65536 array items"),
}


@pytest.mark.parametrize("name", GOOD)
def test_sensible_toml_passes_the_scan(name: str) -> None:
    text = GOOD[name]
    tomllib.loads(text)  # the table holds valid TOML only
    toml_bounds.check(text, "pqd.toml")


@pytest.mark.parametrize("name", ONE_PAST)
def test_one_past_a_bound_is_refused_naming_it(name: str) -> None:
    text, problem = ONE_PAST[name]
    with pytest.raises(ConfigError) as caught:
        toml_bounds.check(text, "pqd.toml")
    assert str(caught.value).startswith("pqd.toml: invalid TOML at line ")
    assert problem in str(caught.value)


def test_a_probe_of_every_shape_within_the_probe_limit_loads() -> None:
    # MAX_PROBES probes, each with a table of its own: the bounds leave room for all of them.
    text = "".join(
        f'[probes.p{n}]\nworkers = 2\ninterval = "30s"\n[probes.p{n}.environment]\nTMPDIR = "/t"\n'
        for n in range(100)
    )
    assert len(config_from_toml(text).probes) == 100


#: At the scan's bounds exactly: handed to tomllib, then refused on their merits.
AT_BOUNDS = {
    "1,536 keys of 16 parts": "".join(f"k{n}." + "a." * 14 + "z = 1\n" for n in range(1536)),
    "8,192 keys of 3 parts": "".join(f"k{n}.a.z = 1\n" for n in range(8192)),
    "512 arrays 16 deep": "".join(f"a{n} = " + "[" * 16 + "]" * 16 + "\n" for n in range(512)),
}
HOSTILE = [
    *hostile_configs(),
    *(HostileConfig(name, text.encode(), name) for name, text in AT_BOUNDS.items()),
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_every_hostile_file_is_one_line_and_exit_78(
    hostile: HostileConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pqd.toml"
    hostile.write(str(path))
    assert path.stat().st_size <= CAP or hostile.name == "over-cap"

    code = main(["check-config", str(path)], environ={})

    err = capsys.readouterr().err
    assert code == 78
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err[:2000]
    assert len(err) < 1000, err[:1000]  # 80 echoed characters, escaped, and the path
