from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from east_agent.decoding.characters import CharacterCuts
from east_agent.decoding.streaming import Counters
from tiny_east import CUT_CHARACTER

U_FFFD = "\ufffd"


def byte_fallback_tokenizer(decoder=None) -> PreTrainedTokenizerFast:
    """A sentencepiece-style tokenizer (Llama 2, Mistral, Gemma): "▁" for spaces, a
    `<0xNN>` token for every byte of a character it has no token for, U+FFFD its own."""
    vocab = {"<unk>": 0, **{f"<0x{byte:02X}>": 1 + byte for byte in range(256)}}
    for piece in ["▁", "a", U_FFFD]:
        vocab[piece] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    tokenizer.decoder = decoder or decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")


def encoder(tokenizer):
    return lambda text: tokenizer(text, add_special_tokens=False).input_ids


def test_whole_takes_back_only_a_cut_character(east_tokenizer):
    encode = encoder(east_tokenizer)
    cuts = CharacterCuts(east_tokenizer)
    assert cuts.token_bytes is not None  # Llama 3's byte-level tokens
    stream = SimpleNamespace(totals=Counters())
    character = encode(CUT_CHARACTER)  # four tokens, one byte each
    assert len(character) == 4
    article = encode(" a")

    def kept(new_ids, written=()):
        return cuts.whole(stream, new_ids, written)

    assert kept(article + character) == article + character  # whole: unchanged
    for cut_after in (1, 2, 3):
        assert kept(article + character[:cut_after]) == article
    assert kept(character[:3]) == []  # the chunk was nothing but the cut character
    # a target's earlier tokens began the character: the new ones all belong to it
    assert kept(character[2:3], written=article + character[:2]) == []
    assert kept(character[3:], written=article + character[:3]) == character[3:]
    assert stream.totals.characters_cut == 5
    # four characters' first bytes: three that no byte can complete any more, and the
    # start of a fourth that the cap cut
    lone_leads = [character[0]] * 4
    assert kept(article + lone_leads) == article + lone_leads[:3]
    assert stream.totals.characters_cut == 6


@pytest.mark.parametrize("text", ["\ufffd", " \ufffd", "a\ufffd"])
def test_a_u_fffd_the_model_writes_is_a_whole_character(east_tokenizer, text):
    """U+FFFD is a character of Llama 3's vocabulary (bytes EF BF BD, one token): written
    by the model it is kept (before: taken for a cut character and dropped)."""
    ids = encoder(east_tokenizer)(" a" + text)
    cuts = CharacterCuts(east_tokenizer)
    stream = SimpleNamespace(totals=Counters())
    assert east_tokenizer.decode(ids).endswith(U_FFFD)
    assert cuts.whole(stream, ids) == ids
    assert stream.totals.characters_cut == 0
    assert cuts.ends_whole(ids)
    assert cuts.written(ids) == " a" + text


def test_written_drops_the_u_fffd_of_a_cut_character_only(east_tokenizer):
    encode = encoder(east_tokenizer)
    cuts = CharacterCuts(east_tokenizer)
    own = encode(" a\ufffd")
    cut = own + encode(CUT_CHARACTER)[:2]
    assert east_tokenizer.decode(cut) == " a\ufffd\ufffd"
    assert cuts.written(cut) == " a\ufffd"
    assert not cuts.ends_whole(cut)


def test_byte_fallback_tokens_are_read_as_their_bytes():
    """Sentencepiece's decoder writes one U+FFFD per byte of a cut character: all of them
    go, the model's own U+FFFD stays."""
    tokenizer = byte_fallback_tokenizer()
    encode = encoder(tokenizer)
    cuts = CharacterCuts(tokenizer)
    assert cuts.token_bytes is not None
    character = encode(CUT_CHARACTER)[1:]  # after the space piece: four byte tokens
    assert tokenizer.convert_ids_to_tokens(character) == ["<0xF0>", "<0xA9>", "<0xB8>", "<0xBD>"]
    prefix = encode("a \ufffd")
    for cut_after in (1, 2, 3):
        ids = prefix + character[:cut_after]
        assert cuts.cut_tokens(ids) == cut_after
        assert tokenizer.decode(ids) == "a " + U_FFFD * (1 + cut_after)
        assert cuts.written(ids) == "a \ufffd"
    assert cuts.cut_tokens(prefix + character) == 0
    assert cuts.cut_tokens(prefix) == 0
    # a whole character in the same run of byte tokens is U+FFFD too while the run is cut
    chinese = encode("a 中文")
    assert tokenizer.decode(chinese[:-2]) == "a " + U_FFFD * 4
    assert cuts.written(chinese[:-2]) == "a 中"


def test_another_tokenizer_is_judged_by_its_text():
    """A decoder without byte tokens: the text's trailing U+FFFD made by the last one to
    three tokens is a cut (the model's own U+FFFD cannot be told from one)."""
    tokenizer = byte_fallback_tokenizer(decoder=decoders.Metaspace())
    encode = encoder(tokenizer)
    cuts = CharacterCuts(tokenizer)
    assert cuts.token_bytes is None
    own = encode("a \ufffd")
    assert cuts.cut_tokens(own) == 1
    assert cuts.written(own) == "a "
    assert not cuts.ends_whole(own)
    assert cuts.cut_tokens(encode("a a")) == 0


def test_the_byte_alphabet_is_gpt2s():
    """Written here to keep transformers' slow-tokenizer converter (20 MB a process) out of
    every run: it must stay the converter's `bytes_to_unicode`."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from east_agent.decoding.characters import byte_alphabet

    assert byte_alphabet() == bytes_to_unicode()
