"""The one YAML reader of grids and training recipes."""

from __future__ import annotations

import pytest

from east_agent.common.yaml_files import YamlFileError, load_yaml, read_yaml_text


def test_a_key_given_twice_is_named_by_line_and_column():
    text = "a: 1\nb:\n  c: 2\n  c: 3\n"
    with pytest.raises(YamlFileError) as error:
        load_yaml(text, "x.yaml")
    assert str(error.value) == "x.yaml: invalid YAML: line 4, column 3: the key 'c' is given twice"


def test_merge_keys_may_be_set_again_and_exponents_are_numbers():
    text = "base: &base {r: 8, alpha: 16}\nlora:\n  <<: *base\n  r: 4\nlr: 1e-6\n"
    assert load_yaml(text, "x.yaml") == {
        "base": {"r": 8, "alpha": 16},
        "lora": {"r": 4, "alpha": 16},
        "lr": 1e-6,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("? [a, b]\n: 1\n", "line 1, column 3: a key must be text"),
        # where the sequence was opened too (before: the line after it alone)
        (
            "a: [1\n",
            "line 2, column 1: while parsing a flow sequence begun at line 1, column 4: "
            "expected ',' or ']'",
        ),
    ],
)
def test_invalid_yaml_is_one_line(text, message):
    with pytest.raises(YamlFileError) as error:
        load_yaml(text, "x.yaml")
    assert str(error.value).startswith(f"x.yaml: invalid YAML: {message}")
    assert "\n" not in str(error.value)


def test_a_file_that_is_no_yaml_text(tmp_path):
    with pytest.raises(YamlFileError, match=f"^{tmp_path / 'no.yaml'}: no such recipe$"):
        read_yaml_text(tmp_path / "no.yaml", "recipe")
    with pytest.raises(YamlFileError, match=f"^{tmp_path}: a folder, not a config file$"):
        read_yaml_text(tmp_path, "config")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(YamlFileError, match=r"latin.yaml: not UTF-8 text \(byte 6\)$"):
        read_yaml_text(latin, "config")


def test_no_yaml_1_1_number_a_user_would_not_mean():
    """YAML 1.1 reads `010` as octal eight and `1:30` as ninety (before: a recipe's
    `max_steps: 0100` trained 64 steps, `cutoff_len: 010` cut at 8 tokens)."""
    text = "a: 010\nb: [0100, 09, -007]\nc: 0x1F\nd: '010'\ne: 1_000\nf: 0.5\n"
    assert load_yaml(text, "x.yaml") == {"a": 10, "b": [100, 9, -7], "c": 31, "d": "010",
                                         "e": 1000, "f": 0.5}  # fmt: skip
    text = "steps: 1:30\nlr: 2:00.5\nquoted: '1:30'\n"
    assert load_yaml(text, "x.yaml") == {"steps": "1:30", "lr": "2:00.5", "quoted": "1:30"}
