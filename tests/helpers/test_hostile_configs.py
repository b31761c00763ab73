"""Self-tests of tests/helpers/hostile_configs.py: the files are what their names say."""

from __future__ import annotations

from tests.helpers.hostile_configs import CAP, FAMILIES, SMALL, hostile_config, hostile_configs


def test_every_family_at_both_sizes_within_the_cap() -> None:
    configs = hostile_configs()
    names = [h.name for h in configs]
    assert len(set(names)) == len(names)
    for family in FAMILIES:
        assert f"{family}-{SMALL // 1024}k" in names and f"{family}-{CAP // 1024}k" in names
    for hostile in configs:
        if hostile.name == "over-cap":
            assert len(hostile.data) == CAP + 1
        else:
            assert len(hostile.data) <= CAP, hostile.name
        assert hostile.what


def test_the_issue_reproducer_is_a_thousand_dotted_parts_in_2k() -> None:
    deep = hostile_config("deep-key-2k").data.decode()
    assert deep.count(".") >= 1000 - 1 and len(deep) <= SMALL
    assert hostile_config("over-cap").name == "over-cap"
