"""Plugin option declarations, the schema probe() reports, and check_options()."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from forgesyte.plugins.options import Option, check_options, declared, schema_of
from forgesyte.plugins.registry import BUILTINS, probe

WHERE = "[plugin.thumbnails] in /etc/forgesyte.toml"


class Declared:
    options = {
        "count": Option(int, 6, "how many", min=1, max=100),
        "ratio": Option(float, 0.5, min=0.0, max=1.0),
        "format": Option(str, "jpg", choices=("jpg", "webp")),
        "enabled": Option(bool, True),
        "tags": Option(list, []),
    }


SCHEMA = schema_of(Declared())


def test_problems_are_one_sentence_each_with_the_place_and_a_hint():
    given_options = {"cuont": 3, "ratio": 2.0, "format": "gif", "enabled": "yes", "count": 2.5, "zzz": 1}
    problems = check_options(SCHEMA, given_options, WHERE)
    assert problems == [
        f"Unknown option 'cuont' in {WHERE}; did you mean 'count'?",
        f"Option 'ratio' in {WHERE} must be between 0 and 1, not 2.0.",
        f"Option 'format' in {WHERE} must be one of 'jpg', 'webp', not 'gif'.",
        f"Option 'enabled' in {WHERE} must be true or false, not 'yes'.",
        f"Option 'count' in {WHERE} must be a whole number, not 2.5.",
        f"Unknown option 'zzz' in {WHERE}; known options: count, enabled, format, ratio, tags.",
    ]
    assert check_options({}, {"x": 1}, WHERE) == [f"Unknown option 'x' in {WHERE}; this plugin takes no options."]


def test_a_float_option_takes_whole_numbers_but_a_bool_is_not_a_number():
    assert check_options(SCHEMA, {"ratio": 1}, WHERE) == []
    assert check_options(SCHEMA, {"ratio": True}, WHERE) == [f"Option 'ratio' in {WHERE} must be a number, not True."]
    assert check_options(SCHEMA, {"ratio": float("nan")}, WHERE)  # NaN is no value


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 100), ratio=st.floats(0, 1), fmt=st.sampled_from(["jpg", "webp"]),
       enabled=st.booleans(), tags=st.lists(st.text(max_size=5), max_size=3))
def test_every_valid_configuration_passes(count, ratio, fmt, enabled, tags):
    assert check_options(SCHEMA, {"count": count, "ratio": ratio, "format": fmt, "enabled": enabled,
                                  "tags": tags}, WHERE) == []


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.lists(st.integers())),
                       max_size=6))
def test_any_configuration_gets_one_sentence_per_bad_entry(options):
    problems = check_options(SCHEMA, options, WHERE)
    assert len(problems) <= len(options)
    for problem in problems:
        assert WHERE in problem and problem.endswith((".", "?")) and "\n" not in problem


def test_older_plugins_get_a_schema_from_their_defaults():
    class Old:
        defaults = {"every": 5, "scale": 0.5, "name": "x", "on": False}

    schema = schema_of(Old())
    assert {k: v["type"] for k, v in schema.items()} == {"every": "int", "scale": "float", "name": "str", "on": "bool"}
    assert check_options(schema, {"evry": 2}, WHERE)[0].endswith("did you mean 'every'?")


def test_every_builtin_declares_its_options_and_probe_reports_them():
    found = probe()
    for name in BUILTINS:
        info = found[name]
        assert info["error"] is None, info
        assert info["kind"] == ("file" if name == "metadata" else "frames")
        assert isinstance(info["cost"], float) and info["cost"] > 0
        json.dumps(info["options"])
        for option, spec in info["options"].items():
            # every default passes its own declaration
            assert check_options(info["options"], {option: spec["default"]}, name) == [], (name, option)
    assert found["thumbnails"]["options"]["format"]["choices"] == ["jpg", "webp"]
    assert set(declared(__import__("forgesyte.plugins.builtin.scenes", fromlist=["x"]).ScenesPlugin())) == \
        {"threshold", "min_scene_s"}
