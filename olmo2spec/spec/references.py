"""References to stages, one of their runs, or one of their steps: `anneal`, `anneal@seed:42`, `rlvr@step:800`.

A soup's `ingredients` and a stage's `from` name stages. A stage name alone means what it always meant
(every run of it for a soup; its final checkpoint for `from`); a selector narrows it:

- `@seed:N`: the run of data-order seed N of an anneal (whose runs are named `<stage>-seed<N>`), e.g. one
  ingredient of a released soup;
- `@step:N`: the checkpoint of step N instead of the final one, e.g. an RLVR run started from an intermediate
  checkpoint of its predecessor.

Stage names never hold '@' (spec/fields.py's SAFE_NAME), so the stage part is everything before the first one.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["StageRef", "parse_ref", "stage_of", "SELECTOR_FORMS"]

_REF = re.compile(r"(?P<stage>[^@]*)(?:@seed:(?P<seed>[0-9]{1,19}))?(?:@step:(?P<step>[0-9]{1,19}))?")

SELECTOR_FORMS = {"seed": "STAGE@seed:N (one run of an anneal)", "step": "STAGE@step:N (that step's checkpoint)"}
"""How each selector is written, for messages."""


@attrs.frozen(kw_only=True)
class StageRef:
    stage: str
    seed: int | None = None
    """Only the run of this data-order seed."""
    step: int | None = None
    """This step's checkpoint instead of the final one."""


def stage_of(text: str) -> str:
    """The stage a reference names (the whole text when it has no selector)."""
    return text.split("@", 1)[0]


def parse_ref(text: str) -> StageRef | None:
    """The reference `text` spells; None when it is not STAGE with at most one @seed:N then one @step:N."""
    match = _REF.fullmatch(text)
    if match is None or not match["stage"]:
        return None
    seed, step = match["seed"], match["step"]
    return StageRef(stage=match["stage"], seed=int(seed) if seed else None, step=int(step) if step else None)
