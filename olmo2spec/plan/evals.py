"""Evaluation suites: the paper's development and held-out tasks, as OLMES task names.

The paper (section 2.5, Appendix A) declares which tasks guided development and which were held
out; OLMES (github.com/allenai/olmes) names them as suites. The `demo` suite is the toy
recipe's own synthetic math, with the same split.
"""

from __future__ import annotations

__all__ = ["SUITES"]

SUITES: dict[str, tuple[list[str], list[str]]] = {
    # Table 20: core multiple choice, MMLU, generative (dev); AGIEval, BBH, GSM8K, MMLU-Pro, TriviaQA (held out)
    "olmes-base": (["core_9mcqa::olmes", "mmlu:mc::olmes", "olmo_2_generative::olmes"], ["olmo_2_heldout::olmes"]),
    # Table 15 / 21: the Tulu 3 development and unseen suites
    "olmes-instruct": (["tulu_3_dev"], ["tulu_3_unseen"]),
    # The demo corpus's math: a dev split (the paper's GSM*) and a held-out split
    "demo": (["demo-math-dev", "demo-heldout-loss"], ["demo-math-heldout"]),
}
