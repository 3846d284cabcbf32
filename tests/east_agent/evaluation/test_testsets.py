"""Test sets as SimulEval files, and every shipped evaluation config."""

import gzip
from pathlib import Path

import pytest

from east_agent.common.fingerprint import file_sha256
from east_agent.decoding.units import join_source_units
from east_agent.evaluation import prepare, testsets
from east_agent.evaluation.config import load_eval_config
from east_agent.evaluation.longform import parse_name
from east_agent.evaluation.testsets import (
    available_testsets,
    prepare_testset,
    read_pairs,
    read_prepared,
)

LEVELS = ["low", "low-medium", "medium", "medium-high", "high"]

# configs that check a direction (EAST and offline) rather than compare with wait-k
DIRECTION_CHECKS = {"multi30k-fr-en"}
CONFIGS = sorted((Path(__file__).resolve().parents[3] / "eval_configs").glob("*.yaml"))
WMT22 = ["de-en", "cs-en", "ru-en", "zh-en", "en-de", "en-cs", "en-ru", "en-zh"]


def test_all_benchmarks_of_the_paper_are_available():
    names = available_testsets()
    assert {f"wmt22.{d}" for d in WMT22} | {"wmt15.de-en", "multi30k.de-en"} <= set(names)


@pytest.mark.parametrize("name", [f"wmt22.{d}" for d in WMT22] + ["wmt15.de-en", "multi30k.fr-en"])
def test_prepared_files_line_up(name, east_tokenizer, tmp_path):
    prepared = prepare_testset(name, tmp_path, east_tokenizer)
    sources = prepared.source.read_text().splitlines()
    references = prepared.reference.read_text().splitlines()
    pairs, src_lang, tgt_lang = read_pairs(name)
    assert len(sources) == len(references) == len(pairs) == prepared.sentences
    invisible = "\u200b\u2060\ufeff"  # a few WMT22 lines' (before: kept, `\u200bI` a word)
    for (source, reference), units, written in zip(pairs, sources, references):
        source, reference = (
            text.translate({ord(c): None for c in invisible}) for text in (source, reference)
        )
        assert join_source_units(units.split(), src_lang) == " ".join(source.split())
        assert written == " ".join(reference.split())
    assert not set(invisible) & set(prepared.source.read_text() + prepared.reference.read_text())
    chinese_target = tgt_lang == "Chinese"
    assert prepared.eval_latency_unit == ("char" if chinese_target else "word")
    assert prepared.sacrebleu_tokenizer == ("zh" if chinese_target else "13a")


def test_chinese_sources_are_split_into_character_groups(east_tokenizer, tmp_path):
    prepared = prepare_testset("wmt22.zh-en", tmp_path, east_tokenizer)
    first = prepared.source.read_text().splitlines()[0]
    # 是否有途径处罚他: Llama-3 has one token for 是否, and 途, 径, 处, 罚 are one each.
    assert first.split() == ["是否", "有", "途", "径", "处", "罚", "他"]


def test_unknown_testset_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown test set 'wmt99.de-en'.*wmt22.de-en"):
        prepare_testset("wmt99.de-en", tmp_path)


def test_chinese_source_needs_the_tokenizer(tmp_path):
    """Refused before the output folder is made (before: an empty folder was left)."""
    with pytest.raises(ValueError, match="needs the checkpoint's tokenizer"):
        prepare_testset("wmt22.zh-en", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sentence_set_prepared_where_talks_were_leaves_no_talk_files(tmp_path):
    from east_agent.evaluation.longform import TALK_FILES

    prepare_testset("multi30k.de-en.talks500", tmp_path)
    assert all((tmp_path / name).exists() for name in TALK_FILES)
    prepare_testset("multi30k.de-en", tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "reference.txt",
        "source.txt",
        "testset.json",
    ]


def test_multi30k_sentences_with_line_separators_stay_paired(tmp_path, monkeypatch):
    folder = tmp_path / "multi30k"
    folder.mkdir()
    texts = {"de": "ein\u2028Hund\nzwei\x85Katzen\n", "en": "a dog\ntwo\x0ccats\n"}
    for language, text in texts.items():
        (folder / f"val.{language}.gz").write_bytes(gzip.compress(text.encode()))
    sums = [f"{file_sha256(path)}  multi30k/{path.name}" for path in folder.iterdir()]
    (tmp_path / testsets.DATA_SUMS).write_text("\n".join(sums) + "\n")
    monkeypatch.setattr(testsets, "DATA", tmp_path)
    pairs, _, _ = read_pairs("multi30k-val.de-en")
    assert pairs == [("ein\u2028Hund", "a dog"), ("zwei\x85Katzen", "two\x0ccats")]


def test_configs_cover_the_paper():
    names = {path.stem for path in CONFIGS}
    assert {f"wmt22-{d}" for d in WMT22} | {"wmt15-de-en", "multi30k-de-en"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_loads_and_states_its_command(path):
    config = load_eval_config(path)
    assert f"east-eval eval_configs/{path.name}" in "".join(path.read_text().splitlines()[:4])
    assert parse_name(config.testset)[0] in available_testsets()
    runs = {run.name: run for run in config.runs()}
    if config.long_form:  # every run reads talks, but the gold-sentence runs
        assert {f"east-gold-{level}" for level in LEVELS} <= set(runs)
        for run in runs.values():
            assert run.flags.get("long_form") is (None if run.gold_sentences else True)
    assert {f"east-{level}" for level in LEVELS} <= set(runs)
    offline = [run for name, run in runs.items() if name.startswith("offline-k")]
    assert [run.flags["prompt"] for run in offline] == ["offline"]
    if path.stem in DIRECTION_CHECKS:
        return
    long_form = {"long_form": True} if config.long_form else {}
    for k in (1, 3, 5, 7, 9):
        assert runs[f"waitk-offline-k{k}"].flags == {"prompt": "offline", "waitk": k, **long_form}
        assert runs[f"waitk-east-k{k}"].flags == {"prompt": "east", "waitk": k, **long_form}
    if not config.long_form:  # long-form tables show OmniSTEval's latencies
        assert {"AL_CA", "LAAL_CA", "LAAL", "AL"} <= set(config.latency_metrics)


def test_a_test_set_cut_off_while_written_leaves_no_record_of_another(tmp_path, monkeypatch):
    """Switching the test set of one folder: killed after the new source was written, the
    old `testset.json` named the new files as the old set (the next grid reused them)."""
    from east_agent.common import atomic

    prepare_testset("multi30k.de-en", tmp_path)
    written = []

    def killed_after_the_source(path, text):
        if path.name == "reference.txt":
            raise KeyboardInterrupt  # the kill, after the source
        written.append(path.name)
        atomic.write_atomically(path, text)

    monkeypatch.setattr(testsets, "write_atomically", killed_after_the_source)
    with pytest.raises(KeyboardInterrupt):
        prepare_testset("multi30k.fr-en", tmp_path)
    assert written == [".preparing", "source.txt"] and read_prepared(tmp_path) is None
    monkeypatch.undo()
    prepare.main(["multi30k.de-en", "--output", str(tmp_path)])  # its own files: again
    assert read_prepared(tmp_path).name == "multi30k.de-en"
    assert not (tmp_path / ".preparing").exists()


def test_a_source_split_by_a_tokenizer_is_split_again_for_another_checkpoint(
    east_checkpoint, tmp_path
):
    """Chinese units come from the checkpoint's tokenizer: a grid of another checkpoint
    into the same output read the first one's units (before); a copy of the same
    checkpoint reuses them."""
    import json
    import shutil

    from east_agent.evaluation.config import EvalConfig
    from east_agent.evaluation.grid import prepare
    from east_agent.evaluation.runs import model_setting

    def grid_of(model):
        return EvalConfig(Path("grid.yaml"), "wmt22.zh-en", str(model), tmp_path / "out", {})

    def recorded():
        return json.loads((tmp_path / "out" / "testset" / "testset.json").read_text())

    prepare(grid_of(east_checkpoint))
    assert recorded()["units_split_by"] == model_setting(str(east_checkpoint))
    copy = shutil.copytree(east_checkpoint, tmp_path / "copy")
    source = tmp_path / "out" / "testset" / "source.txt"
    written = source.stat().st_mtime_ns
    prepare(grid_of(copy))
    assert source.stat().st_mtime_ns == written  # reused: not written again
    other = shutil.copytree(east_checkpoint, tmp_path / "other")
    (other / "generation_config.json").write_text('{"max_length": 7}')  # another checkpoint
    prepare(grid_of(other))
    assert recorded()["units_split_by"] == model_setting(str(other))
    assert source.stat().st_mtime_ns != written


def test_a_grids_tables_read_only_its_own_test_set(tmp_path):
    from east_agent.evaluation.testsets import prepared_named

    prepare_testset("multi30k.de-en", tmp_path)
    assert prepared_named(tmp_path, "multi30k.de-en").sentences == 1000
    with pytest.raises(ValueError, match="holds the test set multi30k.de-en, not the grid's m"):
        prepared_named(tmp_path, "multi30k-val.de-en")
    with pytest.raises(ValueError, match="holds no prepared test set, not the grid's"):
        prepared_named(tmp_path / "none", "multi30k.de-en")


@pytest.mark.parametrize(
    "fault, message",
    [
        ("a sentence edited", "source.txt: changed since multi30k.de-en was prepared there"),
        ("references cut", "reference.txt: changed since multi30k.de-en was prepared there"),
        ("source gone", "source.txt: missing, though"),
        ("no count", "testset.json: 'sentences' is no count: 'abc'; delete source.txt"),
        ("a list", "testset.json: 'sentences' is no count: \\[1\\]; delete source.txt"),
        ("a fraction", "testset.json: 'sentences' is no count: 999.5; delete source.txt"),
        ("a truth", "testset.json: 'sentences' is no count: True; delete source.txt"),
        ("no mapping", "testset.json: 'files_sha256' is no mapping of files; delete source.txt"),
    ],
)
def test_a_prepared_test_set_changed_since_is_refused_naming_the_file(tmp_path, fault, message):
    """Before: the set was trusted by its name: an edited sentence was translated and
    scored as the test set's, and a cut file was found after a demo's runs were emptied."""
    import json

    from east_agent.evaluation.testsets import prepared_named

    prepare_testset("multi30k.de-en", tmp_path)
    source, reference = tmp_path / "source.txt", tmp_path / "reference.txt"
    if fault == "a sentence edited":
        lines = source.read_text().splitlines(keepends=True)
        source.write_text("".join(lines[:2] + ["Ein anderer Satz .\n"] + lines[3:]))
    elif fault == "references cut":
        reference.write_text("".join(reference.read_text().splitlines(keepends=True)[:10]))
    elif fault == "source gone":
        source.unlink()
    else:
        meta = json.loads((tmp_path / "testset.json").read_text())
        changed = {
            "no count": {"sentences": "abc"},
            "a list": {"sentences": [1]},
            "a fraction": {"sentences": 999.5},
            "a truth": {"sentences": True},
        }.get(fault, {"files_sha256": "abc"})
        (tmp_path / "testset.json").write_text(json.dumps({**meta, **changed}))
    with pytest.raises(ValueError, match=message) as refused:
        prepared_named(tmp_path, "multi30k.de-en")
    if "delete source.txt" in message:  # the way out is the folder, whole (before:
        # testset.json alone, and its sentence files were then refused)
        assert str(refused.value).endswith(
            f"delete source.txt, reference.txt, testset.json in {tmp_path} (the next grid, or "
            "east-prepare, prepares the test set again)"
        )


def test_a_test_set_prepared_before_its_files_content_was_recorded_is_read(tmp_path):
    import json

    from east_agent.evaluation.testsets import FILES_SHA256, prepared_named

    prepare_testset("multi30k.de-en", tmp_path)
    meta = json.loads((tmp_path / "testset.json").read_text())
    assert set(meta.pop(FILES_SHA256)) == {"source.txt", "reference.txt"}
    (tmp_path / "testset.json").write_text(json.dumps(meta))
    assert prepared_named(tmp_path, "multi30k.de-en").sentences == 1000


def test_a_test_sets_count_is_written_as_a_number_and_read_as_a_string_too(tmp_path):
    """Before: `"sentences": "1000"`; a folder prepared then is still read."""
    import json

    from east_agent.evaluation.testsets import prepared_named

    prepare_testset("multi30k.de-en", tmp_path)
    meta = json.loads((tmp_path / "testset.json").read_text())
    assert meta["sentences"] == 1000
    (tmp_path / "testset.json").write_text(json.dumps({**meta, "sentences": "1000"}))
    assert prepared_named(tmp_path, "multi30k.de-en").sentences == 1000


def test_every_shipped_data_file_is_as_its_sums_say():
    data = testsets.DATA
    shipped = {str(path.relative_to(data)) for path in data.glob("*/*.gz")}
    assert set(testsets.shipped_sums()) == shipped
    for name in sorted(shipped):
        assert testsets.shipped_file(name) == data / name


@pytest.mark.parametrize("damage", ["cut", "removed"])
def test_a_damaged_shipped_file_is_refused_naming_it(tmp_path, monkeypatch, capsys, damage):
    """Before: a Multi30k file cut short was zipped with its pair into fewer sentences."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(testsets.DATA, copy)
    monkeypatch.setattr(testsets, "DATA", copy)
    damaged = copy / "multi30k" / "test_2016_flickr.en.gz"
    if damage == "cut":
        lines = testsets.read_lines(damaged)[:-1]
        with gzip.open(damaged, "wt", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    else:
        damaged.unlink()
    with pytest.raises(SystemExit) as ended:
        prepare.main(["multi30k.de-en", "--output", str(tmp_path / "out")])
    assert ended.value.code == 2
    said = "damaged since it was shipped" if damage == "cut" else "No such file or directory"
    assert capsys.readouterr().err.startswith(f"east-prepare: {damaged}: {said}")
    assert not (tmp_path / "out").exists()
    prepare.main(["multi30k.de-fr", "--output", str(tmp_path / "fr")])  # its files are whole
