"""Formatting, label masking and validation of SFT data."""

import gzip
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from east_agent.common.records import RecordError
from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    LLAMA3_CHAT_TEMPLATE,
    render_user_turn,
    simt_instruction,
)
from east_agent.decoding.token_stream import TokenStream
from east_agent.decoding.units import SPACE_MARK, source_units, unit_text
from tiny_east import build_llama3_tokenizer
from training.data import (
    IGNORE_INDEX,
    ChatTokenizer,
    DataReport,
    build_samples,
    conversation,
    count_cut_inside_units,
    interleave_chunks,
    read_records,
)

DE_EN = {
    "src_lang": "German",
    "tgt_lang": "English",
    "latency": "low",
    "source_chunks": ["Die Katze", " sitzt auf ", "dem Tisch."],
    "target_chunks": ["The cat", "sits on", "the table."],
}
ZH_EN = {
    "src_lang": "Chinese",
    "tgt_lang": "English",
    "latency": "high",
    "source_chunks": ["中国人民银行", "今天发布了", "新规定。"],
    "target_chunks": ["The People's Bank of China", "issued today", "new rules."],
}
HEADER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
ASSISTANT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def rendered(tokenizer, record):
    return ChatTokenizer(tokenizer).render(conversation(record))[1]


def test_golden_de_en_sample(east_tokenizer):
    assert rendered(east_tokenizer, DE_EN) == (
        HEADER + "You are a professional simultaneous interpreter, your task is to translate "
        "the following German text into English with low latency." + ASSISTANT
        + "Die Katze<|end-of-read|>The cat<|end-of-write|>"
        " sitzt auf<|end-of-read|> sits on<|end-of-write|>"
        " dem Tisch.<|end-of-read|> the table.<|end-of-write|><|eot_id|>"
    )  # fmt: skip


def test_golden_zh_en_sample(east_tokenizer):
    assert rendered(east_tokenizer, ZH_EN) == (
        HEADER + "You are a professional simultaneous interpreter, your task is to translate "
        "the following Chinese text into English with high latency." + ASSISTANT
        + "中国人民银行<|end-of-read|>The People's Bank of China<|end-of-write|>"
        "今天发布了<|end-of-read|> issued today<|end-of-write|>"
        "新规定。<|end-of-read|> new rules.<|end-of-write|><|eot_id|>"
    )  # fmt: skip


def test_chinese_target_chunks_have_no_separator():
    text = interleave_chunks(["I", "am"], ["我", "是"], "English", "Chinese")
    assert text == "I<|end-of-read|>我<|end-of-write|> am<|end-of-read|>是<|end-of-write|>"


@pytest.mark.parametrize("target_chunks", [["我买了 ", "iPhone。"], ["我买了", " iPhone。"]])
def test_chinese_target_chunks_keep_the_space_before_a_latin_word(target_chunks):
    """Where the record keeps a space at a target chunk boundary, the model learns to
    write it (before: `我买了iPhone`, and the decoder wrote what it learned)."""
    text = interleave_chunks(["I bought", "an iPhone."], target_chunks, "English", "Chinese")
    assert text == (
        "I bought<|end-of-read|>我买了<|end-of-write|>"
        " an iPhone.<|end-of-read|> iPhone。<|end-of-write|>"
    )


def test_chunks_ending_inside_a_unit_the_decoder_reads_whole_are_counted(east_tokenizer):
    """`，但是` is one Llama-3 token, so one unit of the decoder's: a record that ends a
    chunk after `，` trains a decision the decoder never meets. Counted (and reported), as
    a Japanese `」と`; chunks ending between units are not."""
    cut = {**ZH_EN, "source_chunks": ["他很累，", "但是还在工作。"], "target_chunks": ["a", "b"]}
    japanese = {**cut, "src_lang": "Japanese", "source_chunks": ["「こんにちは」", "と言った。"]}
    whole = {**cut, "source_chunks": ["他很累", "，但是还在工作。"]}
    spaced = {**DE_EN, "source_chunks": ["Die Kat", "ze sitzt", "auf dem Tisch."]}
    records = [cut, japanese, whole, ZH_EN, spaced]
    items = [conversation(record) for record in records]
    assert count_cut_inside_units(east_tokenizer, items) == 2
    report = DataReport(cut_inside_units=2)
    assert "2 Chinese/Japanese SiMT records end a source chunk inside a unit" in "\n".join(
        report.lines()
    )
    assert "inside a unit" not in "\n".join(DataReport().lines())


def test_offline_and_alpaca_samples(east_tokenizer):
    offline = {"src_lang": "de", "tgt_lang": "en", "source": "Hallo Welt", "target": "Hello world"}
    assert rendered(east_tokenizer, offline).endswith(
        "Translate the following sentence from German into English:\nHallo Welt"
        + ASSISTANT
        + "Hello world<|eot_id|>"
    )
    alpaca = {"instruction": "Translate to English:", "input": "Hallo", "output": "Hello"}
    assert "Translate to English:\nHallo" + ASSISTANT + "Hello<|eot_id|>" in rendered(
        east_tokenizer, alpaca
    )


def test_label_positions(east_tokenizer):
    sample = ChatTokenizer(east_tokenizer).encode(conversation(DE_EN), DataReport())
    ids, labels = sample["input_ids"], sample["labels"]
    # The 32 prompt tokens (user turn and assistant header) carry no loss ...
    assert labels[:32] == [IGNORE_INDEX] * 32
    # ... and every assistant token does: chunks, both EAST tokens, end of turn.
    assert labels[32:] == ids[32:]
    assert len(ids) == 56
    tokens = east_tokenizer.convert_ids_to_tokens(ids[32:])
    assert tokens[:4] == ["Die", "ĠKat", "ze", END_OF_READ]
    assert tokens.count(END_OF_READ) == tokens.count(END_OF_WRITE) == 3
    assert tokens[-1] == "<|eot_id|>"


def test_training_ids_are_what_the_decoder_feeds(east_tokenizer):
    """The format learned in training is token for token the one decoded at inference."""
    sample = ChatTokenizer(east_tokenizer).encode(conversation(DE_EN), DataReport())
    stream = TokenStream(east_tokenizer)
    stream.start(render_user_turn(east_tokenizer, simt_instruction("de", "en", "low")))
    end_of_read, end_of_write = east_tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE])
    read = 0
    for index, (source, target) in enumerate(zip(DE_EN["source_chunks"], DE_EN["target_chunks"])):
        for word in source.split():
            stream.append_text(unit_text(word, "de", first=read == 0))
            read += 1
        stream.append_added_token(end_of_read)
        written = target if index == 0 else " " + target
        stream.append_generated(east_tokenizer(written, add_special_tokens=False).input_ids)
        stream.append_added_token(end_of_write)
    assert stream.ids == sample["input_ids"][:-1]  # all but the final <|eot_id|>


@pytest.mark.parametrize(
    "record, sentence",
    [
        # two spaces inside a chunk: before, trained as written, fed as one
        ({**DE_EN, "source_chunks": ["Die  Katze", "sitzt\tauf", "dem Tisch."]},
         "Die Katze sitzt auf dem Tisch."),
        # a Latin word after a chunk boundary, its space kept by the record: before, trained
        # without it, fed with it
        ({**ZH_EN, "source_chunks": ["我买了", " iPhone 手机", "。"]}, "我买了 iPhone 手机。"),
        (ZH_EN, "中国人民银行今天发布了新规定。"),
    ],
)  # fmt: skip
def test_source_chunks_are_trained_as_the_decoder_feeds_them(east_tokenizer, record, sentence):
    language = "de" if record["src_lang"] == "German" else "zh"
    fed = source_units(sentence, language, east_tokenizer)
    sample = ChatTokenizer(east_tokenizer).encode(conversation(record), DataReport())
    stream = TokenStream(east_tokenizer)
    instruction = simt_instruction(language, "en", record["latency"])
    stream.start(render_user_turn(east_tokenizer, instruction))
    end_of_read, end_of_write = east_tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE])
    read = 0
    for index, (source, target) in enumerate(zip(record["source_chunks"], record["target_chunks"])):
        wanted, got = "".join(source.split()), ""
        while got != wanted:  # the sentence's units that make up the chunk
            stream.append_text(unit_text(fed[read], language, first=read == 0))
            got += fed[read].replace(SPACE_MARK, "")
            read += 1
        stream.append_added_token(end_of_read)
        written = target if index == 0 else " " + target
        stream.append_generated(east_tokenizer(written, add_special_tokens=False).input_ids)
        stream.append_added_token(end_of_write)
    assert stream.ids == sample["input_ids"][:-1]  # all but the final <|eot_id|>


def write_json(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"latency": "instant"}, "record 2: field 'latency': unknown latency 'instant'"),
        ({"target_chunks": ["a"]}, "record 2: 3 source chunks but 1 target chunks"),
        ({"source_chunks": ["a", " ", "c"]}, "record 2: field 'source_chunks': chunk 1 is empty"),
        ({"src_lang": "Klingon"}, "record 2: field 'src_lang': unknown language"),
        # before: "unknown language 'None'"
        ({"tgt_lang": None}, "record 2: field 'tgt_lang' must be a language, as a string \\(got"),
        ({"target_chunks": None}, "record 2: field 'target_chunks' must be a non-empty list"),
    ],
)
def test_malformed_record_names_file_and_index(east_tokenizer, tmp_path, change, message):
    path = write_json(tmp_path / "simt.json", [DE_EN, {**DE_EN, **change}])
    with pytest.raises(RecordError, match=f"simt.json: {message}"):
        build_samples(east_tokenizer, [path], progress=False)


def test_missing_field_is_named(east_tokenizer, tmp_path):
    broken = {key: value for key, value in DE_EN.items() if key != "latency"}
    path = write_json(tmp_path / "simt.json", [broken])
    with pytest.raises(RecordError, match="record 1: missing field 'latency'"):
        build_samples(east_tokenizer, [path], progress=False)


@pytest.mark.parametrize(
    "record, message",
    [
        # before: "missing field 'target_chunks'", the misspelt field unnamed
        ({**{k: v for k, v in DE_EN.items() if k != "target_chunks"},
          "target_chunk": DE_EN["target_chunks"]},
         "record 1: missing field 'target_chunks' \\(the record has 'target_chunk': a misspelling"),
        ({"src_lang": "de", "tgt_lang": "en", "source": "Hund", "Target": "dog"},
         "record 1: missing field 'target' \\(the record has 'Target'"),
        # before: accepted, and "Hund" left out of training without a word
        ({"instruction": "Translate.", "inptu": "Hund", "output": "dog"},
         "record 1: field 'inptu' is not one this reader knows, and the record has no 'input'"),
    ],
)  # fmt: skip
def test_a_misspelt_field_is_named(tmp_path, record, message):
    path = write_json(tmp_path / "records.json", [record])
    with pytest.raises(RecordError, match=f"records.json: {message}"):
        read_records([path])


def test_other_unknown_fields_are_ignored(tmp_path):
    alpaca = {"instruction": "Translate.", "inputs": "x", "output": "dog", "input": "Hund"}
    records = [{**DE_EN, "id": 7, "target_chunks_score": 0.5}, alpaca, {**alpaca, "id": 3}]
    path = write_json(tmp_path / "records.json", records)
    conversations, report = read_records([path])
    assert (len(conversations), report.malformed_skipped) == (3, 0)
    assert sum(turns.user == "Translate.\nHund" for turns in conversations) == 2


def test_an_alpaca_input_that_is_not_text_is_named_or_skipped(tmp_path):
    alpaca = {"instruction": "Translate.", "input": "Hund", "output": "dog"}
    path = write_json(tmp_path / "alpaca.json", [alpaca, {**alpaca, "input": 5}])
    with pytest.raises(RecordError, match="alpaca.json: record 2: field 'input' must be a string"):
        read_records([path])
    conversations, report = read_records([path], skip_malformed=True)
    assert (len(conversations), report.malformed_skipped) == (1, 1)


def test_malformed_records_can_be_skipped_and_are_counted(east_tokenizer, tmp_path):
    path = write_json(tmp_path / "simt.json", [DE_EN, {**DE_EN, "latency": "x"}, ZH_EN])
    samples, report = build_samples(east_tokenizer, [path], skip_malformed=True, progress=False)
    assert (len(samples), report.records, report.malformed_skipped) == (2, 3, 1)


def test_json_lines_and_gzip_are_read(east_tokenizer, tmp_path):
    path = tmp_path / "simt.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in (DE_EN, ZH_EN):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    samples, report = build_samples(east_tokenizer, [path], progress=False)
    assert len(samples) == report.samples == 2


def test_a_utf16_file_is_named_as_such_and_never_skipped(east_tokenizer, tmp_path):
    """Before: "invalid JSON at column 2", and with skip_malformed the whole file skipped
    as unreadable lines, training going on without it."""
    path = tmp_path / "simt.jsonl"
    path.write_bytes((json.dumps(DE_EN) + "\n").encode("utf-16-le"))
    for skip in (False, True):
        with pytest.raises(
            RecordError, match="simt.jsonl: line 1: a NUL byte at column 2; a UTF-16"
        ):
            build_samples(east_tokenizer, [path], skip_malformed=skip, progress=False)


def test_invalid_json_line_is_named(east_tokenizer, tmp_path):
    path = tmp_path / "simt.jsonl"
    path.write_text(json.dumps(DE_EN) + "\n{broken\n")
    with pytest.raises(RecordError, match="simt.jsonl: line 2: invalid JSON at column 2: "):
        build_samples(east_tokenizer, [path], progress=False)
    # cut off in a string: json's "Unterminated string starting at", with its column
    cut = json.dumps([DE_EN, DE_EN], indent=1)
    (tmp_path / "cut.json").write_text(cut[: cut.index('"German"', 200) + 3])
    said = r"cut.json: line \d+: invalid JSON: Unterminated string starting at column \d+;"
    with pytest.raises(RecordError, match=said):
        build_samples(east_tokenizer, [tmp_path / "cut.json"], progress=False)


@pytest.mark.parametrize(
    "value, kind",
    [({"data": [DE_EN]}, "object"), (DE_EN, "object"), ("records", "string")],
    ids=["wrapped", "one-record", "string"],
)
def test_a_file_of_one_json_value_over_several_lines_is_named_as_such(
    east_tokenizer, tmp_path, value, kind
):
    """Before: read as JSON Lines, its first line named as invalid JSON (`{` alone)."""
    path = tmp_path / "simt.json"
    path.write_text(
        json.dumps(value, indent=2) if kind == "object" else f"\n  {json.dumps(value)}\n"
    )
    if kind == "string":  # one line after a blank one: JSON Lines, a line that is no object
        with pytest.raises(
            RecordError, match="simt.json: line 2: expected a JSON object, got string"
        ):
            build_samples(east_tokenizer, [path], progress=False)
        return
    for skip in (False, True):
        with pytest.raises(RecordError) as refused:
            build_samples(east_tokenizer, [path], skip_malformed=skip, progress=False)
        assert str(refused.value) == (
            f"{path}: one JSON object over several lines; records are a JSON list "
            "(`[{...}, {...}]`) or JSON Lines (one object per line)"
        )


def test_json_lines_whose_first_line_is_bad_are_read_on(east_tokenizer, tmp_path):
    """The first line read whole to tell one value over lines from JSON Lines: the lines
    after it are read as ever (split at "\n" only, a lone "\r" inside a record kept)."""
    inside = {**DE_EN, "target_chunks": ["The cat", "sits\ron", "the table."]}
    path = write_lines(tmp_path / "simt.jsonl", [b"{broken\n", jsonl(inside), jsonl(ZH_EN)])
    samples, report = build_samples(east_tokenizer, [path], skip_malformed=True, progress=False)
    assert (len(samples), report.records, report.unreadable_skipped) == (2, 2, 1)


def test_chunks_of_unequal_counts_are_refused_by_the_turn_too():
    """`interleave_chunks` is public: called with chunks the record checks would refuse,
    it raises rather than train the pairs `zip` keeps (before: `c` and `b` dropped)."""
    with pytest.raises(ValueError, match="shorter than argument 1"):
        interleave_chunks(["a", "b", "c"], ["x"], "en", "de")


def test_overlong_samples_are_truncated_and_reported(east_tokenizer, tmp_path):
    path = write_json(tmp_path / "simt.json", [DE_EN, ZH_EN])
    samples, report = build_samples(east_tokenizer, [path], cutoff_len=40, progress=False)
    assert report.truncated == 2
    assert all(len(sample["input_ids"]) == 40 for sample in samples)
    samples, report = build_samples(east_tokenizer, [path], cutoff_len=20, progress=False)
    assert (len(samples), report.dropped_prompt_too_long) == (0, 2)
    assert "2 samples dropped: prompt alone exceeds the cut-off" in report.lines()


# Reading: JSON Lines split on "\n" only, every unreadable line named or skipped and counted.


def write_lines(path, lines: list[bytes]):
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def jsonl(record) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def test_unreadable_lines_are_skipped_and_counted(east_tokenizer, tmp_path):
    lines = [jsonl(DE_EN), b"{broken\n", b"[1, 2]\n", b'{"source": "\xe4"}\n', jsonl(ZH_EN)]
    path = write_lines(tmp_path / "simt.jsonl", lines)
    samples, report = build_samples(east_tokenizer, [path], skip_malformed=True, progress=False)
    # the lines that are no record are not counted as records (before: "5 records read")
    assert (len(samples), report.records, report.unreadable_skipped) == (2, 2, 3)
    assert report.malformed_skipped == 0
    text = "\n".join(report.lines())
    assert "2 records read from 1 file\n" in text and "3 unreadable lines skipped" in text
    assert "simt.jsonl: line 2: invalid JSON" in text


@pytest.mark.parametrize("name", ["simt.jsonl", "simt.jsonl.gz"])
def test_non_utf8_line_is_named(east_tokenizer, tmp_path, name):
    latin1 = json.dumps({**DE_EN, "source_chunks": ["Mädchen"]}, ensure_ascii=False)
    path = write_lines(tmp_path / name, [jsonl(DE_EN), b"\n", latin1.encode("latin-1") + b"\n"])
    with pytest.raises(RecordError, match=f"{name}: line 3: not UTF-8"):
        build_samples(east_tokenizer, [path], progress=False)


def test_non_utf8_in_a_json_list_names_the_line(east_tokenizer, tmp_path):
    text = json.dumps([DE_EN, {**DE_EN, "target_chunks": ["Café"]}], indent=1, ensure_ascii=False)
    path = tmp_path / "simt.json"
    path.write_bytes(text.encode("latin-1"))
    line = text[: text.index("Café")].count("\n") + 1
    with pytest.raises(RecordError, match=f"simt.json: line {line}: not UTF-8"):
        build_samples(east_tokenizer, [path], progress=False)


def test_invalid_json_line_after_blank_lines_names_its_line(east_tokenizer, tmp_path):
    path = write_lines(tmp_path / "simt.jsonl", [jsonl(DE_EN), b"\n", b"  \r\n", b"{broken\n"])
    with pytest.raises(RecordError, match="simt.jsonl: line 4: invalid JSON"):
        build_samples(east_tokenizer, [path], progress=False)


def test_lines_split_only_on_newline(east_tokenizer, tmp_path):
    """U+2028, U+0085 and a lone CR are inside a line (a CR is JSON whitespace); CRLF ends one."""
    odd = {**DE_EN, "target_chunks": ["The\u2028cat", "sits\x85on", "the table."]}
    lone_cr = json.dumps(ZH_EN, ensure_ascii=False).replace(", ", ",\r").encode() + b"\r\n"
    path = write_lines(tmp_path / "simt.jsonl", [jsonl(odd).replace(b"\n", b"\r\n"), lone_cr])
    samples, report = build_samples(east_tokenizer, [path], progress=False)
    assert (len(samples), report.records) == (2, 2)
    texts = [east_tokenizer.decode(sample["input_ids"]) for sample in samples]
    assert any("The\u2028cat<|end-of-write|>" in text for text in texts)
    assert any(" sits\x85on<|end-of-write|>" in text for text in texts)


def test_utf8_byte_order_mark_is_accepted(east_tokenizer, tmp_path):
    path = write_lines(tmp_path / "simt.jsonl", [b"\xef\xbb\xbf" + jsonl(DE_EN), jsonl(ZH_EN)])
    samples, _ = build_samples(east_tokenizer, [path], progress=False)
    assert len(samples) == 2


# Rendering: templates without an add_generation_prompt guard, and the optional system turn.

UNGUARDED_LLAMA3_TEMPLATE = LLAMA3_CHAT_TEMPLATE.replace("{% if add_generation_prompt %}", "")
UNGUARDED_LLAMA3_TEMPLATE = UNGUARDED_LLAMA3_TEMPLATE.removesuffix("{% endif %}")


def tokenizer_with_template(template: str):
    tokenizer = build_llama3_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("eos", ["<|eot_id|>", "<|end_of_text|>"])  # early Llama-3 configs
def test_template_without_generation_guard_trains_no_generation_prompt(east_tokenizer, eos):
    unguarded = tokenizer_with_template(UNGUARDED_LLAMA3_TEMPLATE)
    unguarded.eos_token = eos
    assert unguarded.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=False
    ).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert rendered(unguarded, DE_EN) == rendered(east_tokenizer, DE_EN)
    sample = ChatTokenizer(unguarded).encode(conversation(DE_EN), DataReport())
    reference = ChatTokenizer(east_tokenizer).encode(conversation(DE_EN), DataReport())
    assert sample == reference
    assert unguarded.convert_ids_to_tokens(sample["labels"][-1]) == "<|eot_id|>"


HELPFUL = "You are a helpful assistant."


def test_system_prompt_is_rendered_before_the_user_turn(east_tokenizer):
    text = ChatTokenizer(east_tokenizer, system_prompt=HELPFUL).render(conversation(DE_EN))[1]
    plain = rendered(east_tokenizer, DE_EN)
    system = "<|start_header_id|>system<|end_header_id|>\n\n" + HELPFUL + "<|eot_id|>"
    assert text == "<|begin_of_text|>" + system + plain.removeprefix("<|begin_of_text|>")
    assert text.count(HELPFUL) == 1


def test_system_prompt_carries_no_loss(east_tokenizer):
    sample = ChatTokenizer(east_tokenizer, system_prompt=HELPFUL).encode(
        conversation(DE_EN), DataReport()
    )
    plain = ChatTokenizer(east_tokenizer).encode(conversation(DE_EN), DataReport())
    trained = [label for label in sample["labels"] if label != IGNORE_INDEX]
    assert trained == [label for label in plain["labels"] if label != IGNORE_INDEX]
    assert sample["input_ids"][-len(trained) :] == trained
    masked = len(sample["labels"]) - len(trained)
    assert "system" in east_tokenizer.decode(sample["input_ids"][:masked])
    assert east_tokenizer.decode(trained).startswith("Die Katze<|end-of-read|>")


def test_no_system_turn_by_default(east_tokenizer, tmp_path):
    assert "system" not in rendered(east_tokenizer, DE_EN)
    path = write_json(tmp_path / "simt.json", [DE_EN])
    samples, _ = build_samples(east_tokenizer, [path], progress=False, system_prompt=HELPFUL)
    assert HELPFUL in east_tokenizer.decode(samples[0]["input_ids"])


def test_template_without_system_role_is_refused_naming_the_setting():
    template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + LLAMA3_CHAT_TEMPLATE
    )
    with pytest.raises(ValueError, match="data.system_prompt"):
        ChatTokenizer(tokenizer_with_template(template), system_prompt=HELPFUL)


# The tokenized samples' cache: a second run with the same input loads them, untokenized.


def count_tokenize_calls(monkeypatch) -> list[int]:
    calls = []
    tokenize = ChatTokenizer.tokenize

    def counted(self, batch):
        calls.append(len(batch["user"]))
        return tokenize(self, batch)

    monkeypatch.setattr(ChatTokenizer, "tokenize", counted)
    return calls


def test_a_second_run_loads_the_cached_samples(east_tokenizer, tmp_path, monkeypatch):
    path = write_json(tmp_path / "simt.json", [DE_EN, {**DE_EN, "latency": "x"}, ZH_EN])
    calls = count_tokenize_calls(monkeypatch)
    settings = {"cutoff_len": 58, "skip_malformed": True, "progress": False}  # ZH_EN: 59
    settings["cache_dir"] = tmp_path / "c"
    first, first_report = build_samples(east_tokenizer, [path], **settings)
    assert sum(calls) == 2 and not first_report.cache_reused
    second, second_report = build_samples(east_tokenizer, [path], **settings)
    assert sum(calls) == 2  # nothing tokenized again
    assert second_report.cache_reused and second_report.cache_file == first_report.cache_file
    assert list(second) == list(first) and first.column_names == ["input_ids", "labels"]
    # the report comes from the cached columns: the same counts as when tokenized
    assert (second_report.samples, second_report.truncated) == (2, 1)
    assert {**asdict(second_report), "cache_reused": False} == asdict(first_report)
    assert [path.name for path in (tmp_path / "c").iterdir()] == [
        Path(first_report.cache_file).name
    ]
    uncached, _ = build_samples(east_tokenizer, [path], **{**settings, "cache_dir": None})
    assert list(uncached) == list(first)


def test_a_cache_file_damaged_since_is_made_again(east_tokenizer, tmp_path, monkeypatch, caplog):
    """Before: pyarrow's "Expected to read 792 metadata bytes, but only read 92", naming
    no file, at every rerun."""
    path = write_json(tmp_path / "simt.json", [DE_EN, ZH_EN])
    calls = count_tokenize_calls(monkeypatch)
    settings = {"cutoff_len": 100, "progress": False, "cache_dir": tmp_path / "c"}
    first, report = build_samples(east_tokenizer, [path], **settings)
    expected = list(first)  # read before its file is damaged: the dataset maps it
    os.truncate(report.cache_file, 100)
    again, again_report = build_samples(east_tokenizer, [path], **settings)
    assert sum(calls) == 4 and not again_report.cache_reused
    assert list(again) == expected
    assert f"{report.cache_file} does not read" in caplog.text
    _, third = build_samples(east_tokenizer, [path], **settings)
    assert third.cache_reused and sum(calls) == 4


@pytest.mark.parametrize(
    "change",
    [{"cutoff_len": 40}, {"system_prompt": "You are a helpful assistant."}, {"max_samples": 1}],
)
def test_other_settings_do_not_hit_the_cache(east_tokenizer, tmp_path, monkeypatch, change):
    path = write_json(tmp_path / "simt.json", [DE_EN, ZH_EN])
    settings = {"cutoff_len": 50, "progress": False, "cache_dir": tmp_path / "c"}
    _, first = build_samples(east_tokenizer, [path], **settings)
    calls = count_tokenize_calls(monkeypatch)
    _, second = build_samples(east_tokenizer, [path], **{**settings, **change})
    assert calls and not second.cache_reused  # tokenized again
    assert second.cache_file != first.cache_file


def test_changed_data_do_not_hit_the_cache(east_tokenizer, tmp_path):
    path = write_json(tmp_path / "simt.json", [DE_EN])
    _, first = build_samples(east_tokenizer, [path], progress=False, cache_dir=tmp_path)
    write_json(path, [{**DE_EN, "target_chunks": ["The dog", "sits on", "the table."]}])
    samples, second = build_samples(east_tokenizer, [path], progress=False, cache_dir=tmp_path)
    assert not second.cache_reused and second.cache_file != first.cache_file
    assert "The dog" in east_tokenizer.decode(samples[0]["input_ids"])


def test_bad_input_fails_before_anything_is_tokenized(east_tokenizer, tmp_path, monkeypatch):
    path = write_json(tmp_path / "simt.json", [DE_EN] * 3 + [{**DE_EN, "latency": "x"}])
    calls = count_tokenize_calls(monkeypatch)
    with pytest.raises(RecordError, match="record 4"):
        build_samples(east_tokenizer, [path], progress=False, cache_dir=tmp_path / "c")
    assert calls == [] and not (tmp_path / "c").exists()


def test_no_record_left_gives_an_empty_dataset(east_tokenizer, tmp_path):
    path = write_json(tmp_path / "simt.json", [{**DE_EN, "latency": "x"}])
    samples, report = build_samples(east_tokenizer, [path], skip_malformed=True, progress=False)
    assert len(samples) == report.samples == 0 and samples.column_names == ["input_ids", "labels"]


# Control-token text inside a record: the tokenizer would make it the token itself.

OFFLINE = {"src_lang": "de", "tgt_lang": "en", "source": "Hund", "target": "dog"}
ALPACA = {"instruction": "Translate.", "input": "Hund", "output": "dog"}


@pytest.mark.parametrize(
    "record, message",
    [
        ({**DE_EN, "target_chunks": ["The cat", f"sits{END_OF_WRITE}on", "the table."]},
         f"line 2: field 'target_chunks': chunk 1 holds '{END_OF_WRITE}', a control token"),
        ({**DE_EN, "source_chunks": [f"Die{END_OF_READ} Katze", "sitzt", "hier."]},
         f"line 2: field 'source_chunks': chunk 0 holds '{END_OF_READ}'"),
        ({**OFFLINE, "target": f"a{END_OF_READ}dog"}, "line 2: field 'target' holds '<|end-of-r"),
    ],
)  # fmt: skip
def test_an_east_token_in_a_record_is_refused_when_read(tmp_path, record, message):
    """Before: a chunk holding `<|end-of-write|>` was trained as two writes, out of the
    EAST structure. Found with no tokenizer, before any model loads."""
    path = tmp_path / "simt.jsonl"
    path.write_text(json.dumps(DE_EN) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RecordError, match=f"simt.jsonl: {message}"):
        read_records([path])
    conversations, report = read_records([path], skip_malformed=True)
    assert (len(conversations), report.malformed_skipped) == (1, 1)


@pytest.mark.parametrize(
    "record, message",
    [
        ({**DE_EN, "target_chunks": ["a dog<|eot_id|><|start_header_id|>user", "b", "c"]},
         "line 3: field 'target_chunks': chunk 0 holds '<|eot_id|>', a control token"),
        ({**ALPACA, "input": "Hund<|start_header_id|>"},
         "line 3: field 'input' holds '<|start_header_id|>'"),
        ({**OFFLINE, "source": "<|begin_of_text|>Hund"}, "line 3: field 'source' holds "),
    ],
)  # fmt: skip
def test_a_chat_token_in_a_record_is_refused_before_tokenizing(
    east_tokenizer, tmp_path, monkeypatch, record, message
):
    """Before: `a dog<|eot_id|><|start_header_id|>user` in a target chunk was trained as
    three end-of-turn ids and a user header inside the assistant turn."""
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in (DE_EN, ZH_EN, record)))
    calls = count_tokenize_calls(monkeypatch)
    with pytest.raises(RecordError, match=f"data.jsonl: {message}"):
        build_samples(east_tokenizer, [path], progress=False)
    assert calls == []  # nothing was tokenized
    samples, report = build_samples(east_tokenizer, [path], skip_malformed=True, progress=False)
    assert (len(samples), report.records, report.malformed_skipped) == (2, 3, 1)
    assert report.skipped_examples[0].startswith(f"{path}: {message[:6]}")
    eot = east_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert all(sample["input_ids"].count(eot) == 2 for sample in samples)


# Text that no UTF-8 file holds, chunks that are not text, a file listed twice.


@pytest.mark.parametrize(
    "record, message",
    [
        ({**DE_EN, "source_chunks": ["Ein \ud83d Hund", "sitzt", "hier."]},
         "line 2: field 'source_chunks': chunk 0 holds a lone surrogate '\\\\ud83d' at "
         "character 4"),
        ({**OFFLINE, "target": "a dog \udca9"}, "line 2: field 'target' holds a lone surrogate"),
        ({**ALPACA, "input": "\ude00Hund"}, "line 2: field 'input' holds a lone surrogate"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_is_refused_when_read_or_skipped(tmp_path, record, message):
    """JSON's `\\ud83d` escape without its pair. Before: it failed only once the model had
    loaded, inside pyarrow (`surrogates not allowed`), naming no file or line, and
    `skip_malformed` did not skip it."""
    path = tmp_path / "simt.jsonl"
    path.write_text(json.dumps(DE_EN) + "\n" + json.dumps(record) + "\n")
    assert "\\ud" in path.read_text()  # the file holds the escape, as written by json.dumps
    with pytest.raises(RecordError, match=f"simt.jsonl: {message}"):
        read_records([path])
    conversations, report = read_records([path], skip_malformed=True)
    assert (len(conversations), report.malformed_skipped) == (1, 1)
    assert report.skipped_examples[0].encode("utf-8")  # the message itself is text


def test_a_character_escaped_as_a_surrogate_pair_is_text(east_tokenizer, tmp_path):
    path = tmp_path / "simt.jsonl"
    path.write_text(json.dumps({**DE_EN, "target_chunks": ["The \U0001f600 cat", "b", "c"]}))
    samples, report = build_samples(east_tokenizer, [path], progress=False)
    assert (len(samples), report.malformed_skipped) == (1, 0)


@pytest.mark.parametrize(
    "chunk, kind", [(True, "boolean"), (3, "number"), (2.5, "number"), (None, "null"),
                    (["a"], "array"), ({"a": 1}, "object")]
)  # fmt: skip
def test_a_chunk_that_is_not_text_is_named_by_its_json_type(tmp_path, chunk, kind):
    """Before: `"source_chunks": ["Ein Hund", true]` said "chunk 1 is empty"."""
    path = write_json(tmp_path / "simt.json", [{**DE_EN, "source_chunks": ["a", chunk, "c"]}])
    message = f"simt.json: record 1: field 'source_chunks': chunk 1 is not text (a JSON {kind})"
    with pytest.raises(RecordError, match=re.escape(message)):
        read_records([path])


def test_a_file_listed_twice_is_refused(tmp_path, monkeypatch):
    """Before: `small.jsonl` and `./small.jsonl` (or a link to it) read its records twice,
    and the report said they came from one file, half as many."""
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "small.json", [DE_EN])
    (tmp_path / "link.json").symlink_to("small.json")
    for files in (["small.json", "small.json"], ["small.json", "./small.json"],
                  [str(tmp_path / "small.json"), "link.json"]):  # fmt: skip
        message = f"{files[0]} and {files[1]} are one file: its records would be read twice"
        with pytest.raises(RecordError, match=re.escape(message)):
            read_records(files)
    write_json(tmp_path / "other.json", [ZH_EN])
    conversations, report = read_records(["small.json", "other.json"])
    assert (len(conversations), report.by_file) == (2, {"small.json": 1, "other.json": 1})


def test_records_left_out_by_max_samples_are_named_in_the_report(tmp_path):
    """Before: "40 records read" and "10 training samples", the other 30 unexplained."""
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(DE_EN) + "\n" for _ in range(5)))
    conversations, report = read_records([path], max_samples=2)
    assert len(conversations) == 2
    assert "3 records left out by data.max_samples" in report.lines()
    _, report = read_records([path])
    assert not any("max_samples" in line for line in report.lines())


def test_a_gzip_file_cut_short_is_named_with_the_last_line_read(tmp_path):
    """Before: the file alone ("cannot read: Compressed file ended before ...")."""
    import gzip

    whole = gzip.compress("".join(json.dumps(DE_EN) + "\n" for _ in range(200)).encode())
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(RecordError, match=r"data.jsonl.gz: cannot read after line \d+: "):
        read_records([path])
