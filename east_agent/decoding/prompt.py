"""The EAST prompt format: instruction, latency levels, language names and unit joining.

Everything here must match what the released EAST-8B / EAST-Stage-1-8B checkpoints were
trained on, so it is pinned by golden tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

END_OF_READ = "<|end-of-read|>"
END_OF_WRITE = "<|end-of-write|>"

LATENCY_LEVELS: tuple[str, ...] = ("low", "low-medium", "medium", "medium-high", "high")

SIMT_INSTRUCTION = (
    "You are a professional simultaneous interpreter, your task is to translate the "
    "following {src_lang} text into {tgt_lang} with {latency} latency."
)
OFFLINE_INSTRUCTION = "Translate the following sentence from {src_lang} into {tgt_lang}:"

# Llama-3-Instruct's chat template (EAST-8B's), for tokenizers built here.
# Llama-3's control tokens, which its chat template writes (the EAST checkpoints keep them)
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TURN = "<|eot_id|>"
LLAMA3_SPECIAL_TOKENS = (
    BEGIN_OF_TEXT, "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", END_OF_TURN,
)  # fmt: skip
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

# ISO 639-1 and 639-3 codes of the languages the EAST data covers, and a few more.
LANGUAGE_CODES: dict[str, str] = {
    "ar": "Arabic",
    "ara": "Arabic",
    "cs": "Czech",
    "ces": "Czech",
    "de": "German",
    "deu": "German",
    "en": "English",
    "eng": "English",
    "es": "Spanish",
    "spa": "Spanish",
    "fr": "French",
    "fra": "French",
    "hi": "Hindi",
    "hin": "Hindi",
    "id": "Indonesian",
    "ind": "Indonesian",
    "th": "Thai",
    "tha": "Thai",
    "vi": "Vietnamese",
    "vie": "Vietnamese",
    "sv": "Swedish",
    "swe": "Swedish",
    "fi": "Finnish",
    "fin": "Finnish",
    "ro": "Romanian",
    "ron": "Romanian",
    "hu": "Hungarian",
    "hun": "Hungarian",
    "el": "Greek",
    "ell": "Greek",
    "he": "Hebrew",
    "heb": "Hebrew",
    "fa": "Persian",
    "fas": "Persian",
    "it": "Italian",
    "ita": "Italian",
    "ja": "Japanese",
    "jpn": "Japanese",
    "ko": "Korean",
    "kor": "Korean",
    "nl": "Dutch",
    "nld": "Dutch",
    "pl": "Polish",
    "pol": "Polish",
    "pt": "Portuguese",
    "por": "Portuguese",
    "ru": "Russian",
    "rus": "Russian",
    "tr": "Turkish",
    "tur": "Turkish",
    "uk": "Ukrainian",
    "ukr": "Ukrainian",
    "zh": "Chinese",
    "zho": "Chinese",
    "cmn": "Chinese",
}
LANGUAGE_NAMES: frozenset[str] = frozenset(LANGUAGE_CODES.values())

# Languages written without spaces between words: source units are joined with no
# separator and target chunks carry no leading space.
UNSPACED_LANGUAGES: frozenset[str] = frozenset({"Chinese", "Japanese"})


def language_name(language: str) -> str:
    """Return the English name EAST uses for `language` (an ISO code or a name)."""
    key = language.strip()
    if key.lower() in LANGUAGE_CODES:
        return LANGUAGE_CODES[key.lower()]
    for name in LANGUAGE_NAMES:
        if key.lower() == name.lower():
            return name
    primary, _, region = key.replace("_", "-").partition("-")
    if region and primary.lower() in LANGUAGE_CODES:  # before: named with every other code
        raise ValueError(
            f"unknown language {language!r}: a tag with a region or script is not taken (the "
            f"prompt names the language alone, {LANGUAGE_CODES[primary.lower()]}): use "
            f"{primary.lower()!r}"
        )
    codes = ", ".join(sorted(code for code in LANGUAGE_CODES if len(code) == 2))
    names = ", ".join(sorted(LANGUAGE_NAMES))
    raise ValueError(
        f"unknown language {language!r}: use an ISO 639-1 code ({codes}), its three-letter "
        f"ISO 639-3 one (deu), or an English name ({names})"
    )


def known_language_name(language: str) -> str:
    """`language_name`, or `language` as written where this package does not know it (a
    third-party agent's, SimulEval's server's): for comparing, not for prompts."""
    try:
        return language_name(language)
    except ValueError:
        return language


def check_latency(latency: str) -> str:
    """Return `latency` if it is one of the five EAST levels, else raise naming the choices."""
    if latency not in LATENCY_LEVELS:
        raise ValueError(f"unknown latency {latency!r}: choose one of {', '.join(LATENCY_LEVELS)}")
    return latency


def is_unspaced(language: str) -> bool:
    return language_name(language) in UNSPACED_LANGUAGES


def unit_separator(language: str) -> str:
    """The text put between two source units (or two target chunks) of `language`."""
    return "" if is_unspaced(language) else " "


def simt_instruction(src_lang: str, tgt_lang: str, latency: str) -> str:
    return SIMT_INSTRUCTION.format(
        src_lang=language_name(src_lang),
        tgt_lang=language_name(tgt_lang),
        latency=check_latency(latency),
    )


def offline_instruction(src_lang: str, tgt_lang: str, source: str) -> str:
    header = OFFLINE_INSTRUCTION.format(
        src_lang=language_name(src_lang), tgt_lang=language_name(tgt_lang)
    )
    return f"{header}\n{source}"


def render_user_turn(tokenizer: PreTrainedTokenizerBase, content: str) -> str:
    """Render one user turn with the tokenizer's own chat template, generation prompt added."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template; chat models (EAST checkpoints among them) "
            "ship one (chat_template.jinja or tokenizer_config.json)"
        )
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return cast(str, rendered)  # tokenize=False: the rendered text
