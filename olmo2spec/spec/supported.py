"""Settings the spec can write but the runtime does not implement: refused (E026), never silently ignored.

Each refusal keeps the OLMo 2 value and says why; the field stays in the spec so that recipes can state
the value explicitly. A field the runtime honours has no entry here. tests/spec/test_every_setting.py walks
every field and fails for one that is neither honoured nor refused.
"""

from __future__ import annotations

from olmo2spec.spec.diagnostics import Reporter
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.stages import MicroannealStage, PostTrainStage
from olmo2spec.spec.training import resolve_optimizer

__all__ = ["check_supported", "TOKENIZER_IDS"]

TOKENIZER_IDS = {"dolma2": (100_278, 100_257, 100_277), "bytes": (258, 256, 257)}
"""(vocab_size, eos_id, pad_id) of each tokenizer the runtime loads by name; tests/data checks them against it."""


def check_supported(recipe: Recipe, report: Reporter) -> None:
    m, tok = recipe.model, recipe.tokenizer
    if m.bias:
        report.error("E026", ("model", "bias"), "model.bias = true is not supported by the runtime: OLMo 2 has "
                     "no biases, and the model is built without them", "remove it, or write bias = false")
    if m.dropout:
        report.error("E026", ("model", "dropout"), f"model.dropout = {m.dropout:g} is not supported by the runtime: "
                     "OLMo 2 trains without dropout", "remove it, or write dropout = 0.0")
    if m.init_scaling != "none":
        report.error("E026", ("model", "init_scaling"), f"model.init_scaling = \"{m.init_scaling}\" is not "
                     "supported by the runtime: it initialises every weight from the truncated normal of init_std "
                     "(OLMo 2, section 3.2, which found OLMo-0424's depth-scaled init spiky)",
                     "remove it, or write init_scaling = \"none\"")
    if tok.add_bos:
        report.error("E026", ("tokenizer", "add_bos"), "tokenizer.add_bos = true is not supported by the runtime: "
                     "prepare writes no bos token (OLMo 2 pretrains without one)",
                     "remove it, or write add_bos = false")
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, MicroannealStage) and stage.repeat_mix:
            report.error("E026", ("stages", i, "repeat_mix"), "repeat_mix = true does nothing in a microanneal: "
                         "each run's mix is made for its token budget, and max_repeats bounds how often a "
                         "candidate is seen", "remove it; raise max_repeats to let a candidate repeat")
        z_loss = resolve_optimizer(recipe.optimizer, stage.optimizer).z_loss if isinstance(stage, PostTrainStage) \
            else 0.0
        if z_loss:
            given = stage.optimizer.z_loss is not None  # type: ignore[union-attr]
            report.error("E026", ("stages", i, "optimizer", "z_loss") if given else ("stages", i, "kind"),
                         f"z_loss {z_loss:g}{'' if given else ' (from [optimizer])'} is not supported by the "
                         f"runtime's {stage.kind} loss, which has no z-loss term (nor has open-instruct's)",
                         "write optimizer = { z_loss = 0.0 } on the stage")
    ids = TOKENIZER_IDS.get(tok.name)
    if ids is None:
        return  # an unknown name is reported where it is read
    for key, expected in zip(("vocab_size", "eos_id", "pad_id"), ids, strict=True):
        if key != "vocab_size" and getattr(tok, key) >= tok.vocab_size:
            continue  # outside the vocabulary: E024 says so
        if getattr(tok, key) != expected:
            report.error("E026", ("tokenizer", key), f"tokenizer.{key} = {getattr(tok, key)} is not the {tok.name} "
                         f"tokenizer's ({expected}): the runtime reads token ids from the tokenizer itself",
                         f"write {key} = {expected}, or pick the tokenizer that has this vocabulary")
