"""The RLVR verifiers: real-format responses, right, wrong, malformed and hostile, per verifier."""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time

import pytest

from olmo2spec.posttrain.verifiers import (
    VERIFIER_NAMES,
    GroundTruthError,
    VerifierError,
    VerifierUnavailable,
    require,
    verify,
)
from olmo2spec.posttrain.verifiers.ifeval_instructions import INSTRUCTIONS, UNSUPPORTED
from olmo2spec.posttrain.verifiers.math_answer import extract_answer, last_boxed


class TestRegistry:
    def test_the_checker_reads_the_verifier_table(self):
        from olmo2spec.spec.stages import VERIFIERS

        assert VERIFIERS == VERIFIER_NAMES == ("gsm8k", "math", "ifeval")

    def test_every_name_scores(self):
        truths = {"gsm8k": "3", "math": "3", "ifeval": {"instruction_id": ["punctuation:no_comma"], "kwargs": [{}]}}
        assert {name: verify(name, "The answer is \\boxed{3}", truths[name]) for name in VERIFIER_NAMES} == \
            dict.fromkeys(VERIFIER_NAMES, 1.0)

    def test_unknown_verifier_is_an_error(self):
        with pytest.raises(VerifierError, match="unknown verifier 'code': the verifiers are gsm8k, math, ifeval"):
            verify("code", "x", "1")

    def test_response_must_be_text(self):
        with pytest.raises(TypeError, match="a response is text"):
            verify("gsm8k", None, "1")  # type: ignore[arg-type]

    def test_missing_math_verify_names_the_extra(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "math_verify", None)  # `import math_verify` raises ImportError
        with pytest.raises(VerifierUnavailable, match=r"pip install 'olmo2spec\[posttrain\]'"):
            verify("math", "\\boxed{3}", "4")

    def test_missing_math_verify_at_scoring_names_the_extra(self, monkeypatch):
        from olmo2spec.posttrain.verifiers.math_answer import equivalent

        monkeypatch.setitem(sys.modules, "math_verify", None)
        with pytest.raises(VerifierUnavailable, match=r"pip install 'olmo2spec\[posttrain\]'"):
            equivalent("0.5", "\\frac{1}{2}")

    def test_require_checks_packages_before_training(self, monkeypatch):
        require(VERIFIER_NAMES)
        monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
        with pytest.raises(VerifierUnavailable, match="'math' verifier needs the 'math-verify' package"):
            require(["gsm8k", "math"])


class TestGsm8k:
    @pytest.mark.parametrize(("response", "truth"), [
        ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72", "72"),
        ("She makes 9 * 2 = $18 every day at the farmers' market.\nThe answer is $18.", "18"),
        ("The total is $1,000.", "1000"),
        ("The total is 1000", "1,000"),
        ("So the answer is 1,234,567.", "1234567"),
        ("The temperature fell to -5 degrees.", "-5"),
        ("The temperature fell to \u22125 degrees.", "-5"),  # Unicode minus
        ("Each costs 0.50 dollars", "0.5"),
        ("It takes 18.0 hours", "18"),
        ("The answer is 72", 72),
        ("Half is .5", 0.5),
        ("The answer is 72.", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"),  # GSM8K's answer field
    ])
    def test_right(self, response, truth):
        assert verify("gsm8k", response, truth) == 1.0

    @pytest.mark.parametrize(("response", "truth"), [
        ("The answer is 72, checked in 2024.", "72"),  # the last number counts, as in open-instruct
        ("#### 71", "72"),
        ("The answer is 5", "-5"),
        ("Between 3-5 apples", "-5"),  # a range, not a negative number
        ("numbers 1,2,3", "123"),  # a list, not thousands separators
        ("seventy-two", "72"),
        ("", "72"),
        ("   \n ", "72"),
        ("1" * 100_000, "72"),  # a huge string
        ("٧٢", "72"),  # non-ASCII digits are not read as numbers
    ])
    def test_wrong_or_no_number(self, response, truth):
        assert verify("gsm8k", response, truth) == 0.0

    @pytest.mark.parametrize("truth", ["seventy-two", "", "NaN", "inf", None, True, ["72"]])
    def test_malformed_ground_truth_is_an_error(self, truth):
        with pytest.raises(GroundTruthError, match="gsm8k ground truth"):
            verify("gsm8k", "72", truth)


class TestMathExtraction:
    @pytest.mark.parametrize(("response", "answer"), [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{1}, then on reflection \\boxed{2}.", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
        ("\\fbox{7}", "7"),
        ("\\boxed 5$", "5"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Final Answer: The final answer is 3.5. I hope it is correct.", "3.5"),
        ("so we get $x=4$ and hence $y = 2$", "y = 2"),
        ("\\boxed{\\frac{1}{2}", None),  # unbalanced: never closed
        ("\\boxed{}", None),
        ("The answer is 4", None),
        ("", None),
        ("\\boxedx{3}", None),
    ])
    def test_extract(self, response, answer):
        assert extract_answer(response) == answer

    def test_huge_unclosed_box_is_linear(self):
        assert last_boxed("\\boxed{" + "{" * 200_000) is None


class TestMath:
    @pytest.mark.parametrize(("response", "truth"), [
        ("The probability is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{\\dfrac{\\sqrt{2}}{2}}", "\\frac{\\sqrt2}{2}"),
        ("\\boxed{(x+1)^2}", "x^2+2x+1"),
        ("\\boxed{x = 2}", "2"),
        ("\\boxed{[1, 2)}", "[1,2)"),
        ("\\boxed{\u22123}", "-3"),  # Unicode minus
        ("Final Answer: The final answer is $12$. I hope it is correct.", "12"),
        ("The answer is \\boxed{6}", "The area is $\\boxed{6}$."),  # a whole solution as ground truth
        ("\\boxed{6}", 6),
        ("\\boxed{C}", "\\text{(C)}"),  # a multiple-choice letter
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),
        ("\\boxed{\\sqrt{50}}", "5\\sqrt{2}"),
        ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ])
    def test_equivalent(self, response, truth):
        assert verify("math", response, truth) == 1.0

    @pytest.mark.parametrize(("response", "truth"), [
        ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}"),
        ("\\boxed{(2, 1)}", "(1,2)"),
        ("\\boxed{3.14159}", "\\pi"),
        ("\\boxed{-3}", "3"),
        ("\\boxed{\\text{Bob}}", "\\text{Evelyn}"),
        ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}"),  # unbalanced braces: no answer
        ("The answer is 1/2", "\\frac{1}{2}"),  # no final answer marked
        ("", "\\frac{1}{2}"),
        ("\\boxed{" + "1+" * 5000 + "1}", "5001"),  # past MAX_ANSWER_CHARS: refused, not parsed
        ("\\boxed{\\frac{1}{}}", "\\frac{1}{2}"),
    ])
    def test_not_equivalent(self, response, truth):
        assert verify("math", response, truth) == 0.0

    @pytest.mark.parametrize("truth", ["", "  $$ ", "\\boxed{}", None, ["1"]])
    def test_malformed_ground_truth_is_an_error(self, truth):
        with pytest.raises(GroundTruthError, match="math ground truth"):
            verify("math", "\\boxed{1}", truth)

    def test_in_a_thread(self):
        """math-verify's timeouts use signals (main thread only): off it, they are off, and scoring still works."""
        scores: list[float] = []
        worker = threading.Thread(target=lambda: scores.append(verify("math", "\\boxed{0.5}", "\\frac{1}{2}")))
        worker.start()
        worker.join()
        assert scores == [1.0]


def ifeval(instruction_id, **kwargs):
    return {"instruction_id": [instruction_id], "kwargs": [kwargs]}


class TestIfeval:
    @pytest.mark.parametrize(("response", "truth"), [
        ("i love python and rust.", ifeval("keywords:existence", keywords=["Python", "rust"])),
        ("cat cat Cat dog", ifeval("keywords:frequency", keyword="cat", frequency=3, relation="at least")),
        ("cat dog", ifeval("keywords:frequency", keyword="cat", frequency=2, relation="less than")),
        ("A concatenation.", ifeval("keywords:forbidden_words", forbidden_words=["cat", "dog"])),
        ("Banana", ifeval("keywords:letter_frequency", letter="a", let_frequency=3, let_relation="at least")),
        ("one\n***\ntwo\n***\nthree", ifeval("length_constraints:number_paragraphs", num_paragraphs=3)),
        ("one two three", ifeval("length_constraints:number_words", num_words=4, relation="less than")),
        ("Hi.\n\n\"Summer, it is.\n\nEnd", ifeval("length_constraints:nth_paragraph_first_word", num_paragraphs=3,
                                                  nth_paragraph=2, first_word="summer")),
        ("Dear [name], at [address].", ifeval("detectable_content:number_placeholders", num_placeholders=2)),
        ("Body.\n\nP.S. I love it.", ifeval("detectable_content:postscript", postscript_marker="P.S.")),
        ("Body.\np.p.s see you", ifeval("detectable_content:postscript", postscript_marker="P.P.S")),
        ("* one\n* two\n- three", ifeval("detectable_format:number_bullet_lists", num_bullets=3)),
        ("My answer is yes.", ifeval("detectable_format:constrained_response")),
        ("*one* and **two**", ifeval("detectable_format:number_highlighted_sections", num_highlights=2)),
        ("SECTION 1\nfoo\nSECTION 2\nbar", ifeval("detectable_format:multiple_sections", section_spliter="SECTION",
                                                  num_sections=2)),
        ('```json\n{"a": 1}\n```', ifeval("detectable_format:json_format")),
        ("<<Ode to Joy>>\nverse", ifeval("detectable_format:title")),
        ("Yes.\n******\nNo.", ifeval("combination:two_responses")),
        ("Write a poem. Here it is", ifeval("combination:repeat_prompt", prompt_to_repeat="write a poem.")),
        ('Done. Any other questions?"', ifeval("startend:end_checker", end_phrase="Any other questions?")),
        ('"wrapped"', ifeval("startend:quotation")),
        ("ALL CAPS, 100%!", ifeval("change_case:english_capital")),
        ("all lowercase, 100%!", ifeval("change_case:english_lowercase")),
        ("no commas here", ifeval("punctuation:no_comma")),
    ])
    def test_followed(self, response, truth):
        assert verify("ifeval", response, truth) == 1.0

    @pytest.mark.parametrize(("response", "truth"), [
        ("i love python.", ifeval("keywords:existence", keywords=["python", "rust"])),
        ("cat cat", ifeval("keywords:frequency", keyword="cat", frequency=3, relation="at least")),
        ("A cat.", ifeval("keywords:forbidden_words", forbidden_words=["CAT"])),
        ("Banana", ifeval("keywords:letter_frequency", letter="a", let_frequency=3, let_relation="less than")),
        ("one\n***\n\n***\nthree", ifeval("length_constraints:number_paragraphs", num_paragraphs=3)),
        ("one two three four", ifeval("length_constraints:number_words", num_words=4, relation="less than")),
        ("Hi.\n\nWinter.\n\nEnd", ifeval("length_constraints:nth_paragraph_first_word", num_paragraphs=3,
                                         nth_paragraph=2, first_word="summer")),
        ("Hi.", ifeval("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=5,
                       first_word="hi")),
        ("Dear [name].", ifeval("detectable_content:number_placeholders", num_placeholders=2)),
        ("Body without one.", ifeval("detectable_content:postscript", postscript_marker="P.S.")),
        ("* one\n* two", ifeval("detectable_format:number_bullet_lists", num_bullets=3)),
        ("Yes.", ifeval("detectable_format:constrained_response")),
        ("** ** and *one*", ifeval("detectable_format:number_highlighted_sections", num_highlights=2)),
        ("SECTION 1\nfoo", ifeval("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2)),
        ("{'a': 1}", ifeval("detectable_format:json_format")),
        ("<<>>\nverse", ifeval("detectable_format:title")),
        ("Yes.\n******\nYes.", ifeval("combination:two_responses")),
        ("Yes.\n******\n\n******\nNo.", ifeval("combination:two_responses")),
        ("Here it is", ifeval("combination:repeat_prompt", prompt_to_repeat="write a poem.")),
        ("Any other questions? Bye.", ifeval("startend:end_checker", end_phrase="Any other questions?")),
        ('"half', ifeval("startend:quotation")),
        ('"', ifeval("startend:quotation")),
        ("ALL CAPS but one", ifeval("change_case:english_capital")),
        ("Not lowercase", ifeval("change_case:english_lowercase")),
        ("a, b", ifeval("punctuation:no_comma")),
    ])
    def test_not_followed(self, response, truth):
        assert verify("ifeval", response, truth) == 0.0

    def test_every_instruction_must_be_followed(self):
        truth = {"instruction_id": ["punctuation:no_comma", "change_case:english_lowercase"], "kwargs": [{}, {}]}
        assert verify("ifeval", "all lowercase no commas", truth) == 1.0
        assert verify("ifeval", "all lowercase, one comma", truth) == 0.0  # half followed is not followed

    @pytest.mark.parametrize("form", [
        lambda truth: json.dumps(truth),  # a JSON string
        lambda truth: [truth],  # open-instruct's one-element list
        lambda truth: str([truth]),  # ... as a Python repr
        lambda truth: {**truth, "kwargs": [{"num_words": 3, "relation": "at least", "keyword": None}]},
        lambda truth: {**truth, "kwargs": [{"num_words": 3.0, "relation": "at least"}]},  # pandas' nullable int
    ])
    def test_ground_truth_forms(self, form):
        truth = ifeval("length_constraints:number_words", num_words=3, relation="at least")
        assert verify("ifeval", "one two three", form(truth)) == 1.0

    def test_regex_characters_in_keywords_are_text(self):
        assert verify("ifeval", "I write C++ daily", ifeval("keywords:existence", keywords=["c++"])) == 1.0
        assert verify("ifeval", "I write C daily", ifeval("keywords:existence", keywords=["c++"])) == 0.0

    def test_empty_response_follows_nothing(self):
        assert verify("ifeval", "", ifeval("punctuation:no_comma")) == 0.0
        assert verify("ifeval", "  \n", ifeval("punctuation:no_comma")) == 0.0

    def test_huge_response(self):
        assert verify("ifeval", "word " * 200_000, ifeval("length_constraints:number_words", num_words=100_000,
                                                           relation="at least")) == 1.0

    def test_supports_the_common_instruction_ids(self):
        assert len(INSTRUCTIONS) >= 15
        assert not set(INSTRUCTIONS) & set(UNSUPPORTED)

    @pytest.mark.parametrize(("truth", "message"), [
        (ifeval("keywords:nonexistent"), "unknown ifeval instruction id 'keywords:nonexistent'; the ids supported"),
        (ifeval("language:response_language", language="en"), "'language:response_language' is not supported: it "
                                                               "needs a language detector"),
        (ifeval("length_constraints:number_words", num_words=3), r"takes the kwargs \['num_words', 'relation'\]; "
                                                                 r"missing: \['relation'\]"),
        (ifeval("punctuation:no_comma", comma=True), r"takes the kwargs none; unknown: \['comma'\]"),
        (ifeval("length_constraints:number_words", num_words=3, relation="at most"),
         "'relation' must be one of"),
        (ifeval("length_constraints:number_words", num_words="3", relation="at least"), "must be a whole number"),
        (ifeval("length_constraints:number_words", num_words=-1, relation="at least"), "must be a whole number"),
        (ifeval("keywords:letter_frequency", letter="ab", let_frequency=1, let_relation="at least"),
         "must be a single letter"),
        (ifeval("keywords:existence", keywords="python"), "must be a non-empty list"),
        (ifeval("keywords:existence", keywords=[]), "must be a non-empty list"),
        ({"instruction_id": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}]}, "of the same length"),
        ({"instruction_id": [], "kwargs": []}, "non-empty 'instruction_id' list"),
        ({"kwargs": [{}]}, "has no 'instruction_id'"),
        ("{not json", "neither JSON nor a Python literal"),
        ("[1, 2]", "has no 'instruction_id'"),
        (None, "has no 'instruction_id'"),
        ({"instruction_id": [3], "kwargs": [{}]}, "an instruction id must be a string"),
        ({"instruction_id": ["startend:quotation"], "kwargs": ["x"]}, "kwargs of 'startend:quotation' must be a dict"),
    ])
    def test_malformed_ground_truth_is_an_error(self, truth, message):
        with pytest.raises(GroundTruthError, match=message):
            verify("ifeval", "a response", truth)

    def test_malformed_ground_truth_is_an_error_even_for_an_empty_response(self):
        with pytest.raises(GroundTruthError, match="unknown ifeval instruction id"):
            verify("ifeval", "", ifeval("keywords:nonexistent"))


# Google's reference expressions for the checkers written differently here (to run in linear time).
REFERENCE = {
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2}, lambda text: len(re.findall(r"\[.*?\]", text)) >= 2),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."},
        lambda text: bool(re.findall(r"\s*p\.\s?s\..*$", text.lower(), flags=re.MULTILINE))),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 2}, lambda text: len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE))
        + len(re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)) == 2),
    "detectable_format:title": (
        {}, lambda text: any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", text))),
}


class TestIfevalAgainstTheReference:
    """Where a checker is written differently from Google's reference (to run in linear time), it agrees with the
    reference's own expression on thousands of strings made of the characters that matter."""

    @pytest.mark.parametrize("instruction_id", sorted(REFERENCE))
    def test_same_verdicts(self, instruction_id):
        kwargs, reference = REFERENCE[instruction_id]
        pieces = ["<<", ">>", "<", ">", "[", "]", "*", "-", "a", " ", "\n", "\t", "p.s.", "P. S.", "\n\n"]
        rng = random.Random(13)
        texts = ["".join(rng.choices(pieces, k=rng.randint(0, 10))) for _ in range(3000)]
        check = INSTRUCTIONS[instruction_id].check
        assert [text for text in texts if check(text, **kwargs) != reference(text)] == []

    @pytest.mark.parametrize("text", ["<<" * 100_000, "[" * 100_000, "\n" * 100_000, " " * 100_000 + "x"])
    def test_linear_time_on_hostile_responses(self, text):
        """The reference's expressions take minutes on these (quadratic); a response must not stall a rollout."""
        started = time.perf_counter()
        for instruction_id, (kwargs, _) in REFERENCE.items():
            INSTRUCTIONS[instruction_id].check(text, **kwargs)
        assert time.perf_counter() - started < 5
