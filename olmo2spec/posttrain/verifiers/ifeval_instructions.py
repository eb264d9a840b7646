"""IFEval's instructions: one checker per instruction id, with the semantics of Google's reference.

Each checker is `check(response, **kwargs) -> bool`, written from google-research's
instruction_following_eval/instructions.py (`check_following`), strict mode: the response as
written. Where this differs from the reference, on purpose:

- a kwarg the reference would pick at random when absent is required here (a reward cannot be
  random), and a relation other than "less than" / "at least" is an error there and here;
- keywords, the section splitter and the postscript marker are matched as text, not as regular
  expressions (the reference passes them to `re` unescaped: a "c++" keyword would crash it);
- `change_case:english_capital` / `english_lowercase` check the case only, not that the text is
  English (the reference asks `langdetect`, which is not a dependency here).

Not supported (an error, not a 0): `language:response_language` (language detection),
`length_constraints:number_sentences` (nltk's punkt sentence splitter) and
`change_case:capital_word_frequency` (nltk's word tokenizer).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable

import attrs

__all__ = ["Instruction", "INSTRUCTIONS", "UNSUPPORTED", "RELATIONS"]

RELATIONS = ("less than", "at least")
"""The comparisons IFEval's counting instructions take: `count < n` or `count >= n`."""

CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


@attrs.frozen(kw_only=True)
class Instruction:
    """One instruction id: its checker and the kwargs it takes, each with its type."""

    check: Callable[..., bool]
    kwargs: dict[str, type] = attrs.field(factory=dict)
    """Every kwarg the checker needs (all required), name -> int, str or list (of str)."""


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


def _keywords_exist(response: str, *, keywords: list[str]) -> bool:
    return all(re.search(re.escape(keyword), response, flags=re.IGNORECASE) for keyword in keywords)


def _keyword_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    count = len(re.findall(re.escape(keyword.strip()), response, flags=re.IGNORECASE))
    return _compare(count, relation, frequency)


def _forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(word) + r"\b", response, flags=re.IGNORECASE)
                   for word in forbidden_words)


def _letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    count = collections.Counter(response.lower())[letter.strip().lower()]
    return _compare(count, let_relation, let_frequency)


def _number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Paragraphs split by the markdown divider `***`; an empty one is allowed only at either end."""
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index not in (0, len(paragraphs) - 1):
                return False
            count -= 1
    return count == num_paragraphs


def _number_words(response: str, *, num_words: int, relation: str) -> bool:
    return _compare(len(re.findall(r"\w+", response)), relation, num_words)  # nltk's RegexpTokenizer(r"\w+")


def _nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Paragraphs split by blank lines; as the reference, the nth is indexed among all splits (empty ones too)."""
    paragraphs = re.split(r"\n\n", response)
    count = sum(1 for paragraph in paragraphs if paragraph.strip())
    if nth_paragraph < 1 or nth_paragraph > count:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = re.match(r"[^.,?!'\"]*", word)
    found = first.group(0).lower() if first else ""
    return count == num_paragraphs and found == first_word.lower()


def _number_placeholders(response: str, *, num_placeholders: int) -> bool:
    # The reference's r"\[.*?\]" counts the same, but takes quadratic time on a line of unclosed `[`.
    return len(re.findall(r"\[[^\[\]\n]*\]", response)) >= num_placeholders


def _postscript(response: str, *, postscript_marker: str) -> bool:
    """The marker anywhere: the reference's patterns (r"\\s*p\\.\\s?s\\..*$") only add optional text around it."""
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"p\.\s?p\.\s?s"
    elif marker == "P.S.":
        pattern = r"p\.\s?s\."
    else:
        pattern = re.escape(marker.lower())
    return re.search(pattern, response.lower()) is not None


def _number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    # The reference's r"^\s*" lets a match start on a blank line above (same count, quadratic time on blank lines).
    stars = re.findall(r"^[^\S\n]*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^[^\S\n]*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def _constrained_response(response: str) -> bool:
    return any(option in response.strip() for option in CONSTRAINED_RESPONSES)


def _number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double) >= num_highlights


def _multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    sections = re.split(r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?", response)
    return len(sections) - 1 >= num_sections


def _json_format(response: str) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # deep nesting ("[[[[...") is not JSON a reader can take
        return False
    return True


def _title(response: str) -> bool:
    """A non-blank `<<title>>`: per line, the reference's greedy r"<<[^\\n]+>>" spans the first `<<` to the last `>>`
    (found here without its quadratic time on a line of `<<<<...`)."""
    for line in response.split("\n"):
        start, end = line.find("<<"), line.rfind(">>")
        if start >= 0 and end >= start + 3 and line[start:end + 2].lstrip("<").rstrip(">").strip():
            return True
    return False


def _two_responses(response: str) -> bool:
    """Exactly two different non-empty responses separated by `******` (an empty part only at either end)."""
    parts = response.split("******")
    kept = []
    for index, part in enumerate(parts):
        if part.strip():
            kept.append(part.strip())
        elif index not in (0, len(parts) - 1):
            return False
    return len(kept) == 2 and kept[0] != kept[1]


def _repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _end_checker(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def _quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _english_capital(response: str) -> bool:
    return response.isupper()


def _english_lowercase(response: str) -> bool:
    return response.islower()


def _no_comma(response: str) -> bool:
    return "," not in response


INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction(check=_keywords_exist, kwargs={"keywords": list}),
    "keywords:frequency": Instruction(check=_keyword_frequency,
                                      kwargs={"keyword": str, "frequency": int, "relation": str}),
    "keywords:forbidden_words": Instruction(check=_forbidden_words, kwargs={"forbidden_words": list}),
    "keywords:letter_frequency": Instruction(check=_letter_frequency,
                                             kwargs={"letter": str, "let_frequency": int, "let_relation": str}),
    "length_constraints:number_paragraphs": Instruction(check=_number_paragraphs, kwargs={"num_paragraphs": int}),
    "length_constraints:number_words": Instruction(check=_number_words, kwargs={"num_words": int, "relation": str}),
    "length_constraints:nth_paragraph_first_word": Instruction(
        check=_nth_paragraph_first_word, kwargs={"num_paragraphs": int, "nth_paragraph": int, "first_word": str}),
    "detectable_content:number_placeholders": Instruction(check=_number_placeholders,
                                                          kwargs={"num_placeholders": int}),
    "detectable_content:postscript": Instruction(check=_postscript, kwargs={"postscript_marker": str}),
    "detectable_format:number_bullet_lists": Instruction(check=_number_bullet_lists, kwargs={"num_bullets": int}),
    "detectable_format:constrained_response": Instruction(check=_constrained_response),
    "detectable_format:number_highlighted_sections": Instruction(check=_number_highlighted_sections,
                                                                 kwargs={"num_highlights": int}),
    "detectable_format:multiple_sections": Instruction(check=_multiple_sections,
                                                       kwargs={"section_spliter": str, "num_sections": int}),
    "detectable_format:json_format": Instruction(check=_json_format),
    "detectable_format:title": Instruction(check=_title),
    "combination:two_responses": Instruction(check=_two_responses),
    "combination:repeat_prompt": Instruction(check=_repeat_prompt, kwargs={"prompt_to_repeat": str}),
    "startend:end_checker": Instruction(check=_end_checker, kwargs={"end_phrase": str}),
    "startend:quotation": Instruction(check=_quotation),
    "change_case:english_capital": Instruction(check=_english_capital),
    "change_case:english_lowercase": Instruction(check=_english_lowercase),
    "punctuation:no_comma": Instruction(check=_no_comma),
}

UNSUPPORTED: dict[str, str] = {
    "language:response_language": "it needs a language detector (the reference uses langdetect)",
    "length_constraints:number_sentences": "it needs nltk's punkt sentence splitter",
    "change_case:capital_word_frequency": "it needs nltk's word tokenizer",
}
"""IFEval instruction ids this verifier knows of but does not check, and why."""
