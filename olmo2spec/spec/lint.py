"""Stability lint: settings the OLMo 2 paper found to cause loss or gradient spikes.

Warnings, not errors: a recipe may deviate on purpose (an ablation). `--strict` makes them
errors. Each message cites the section of the paper with the evidence.
"""

from __future__ import annotations

from olmo2spec.spec.diagnostics import Reporter
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.schedules import CosineSchedule, WsdSchedule
from olmo2spec.spec.stages import PrepareStage, PretrainStage, TrainStage

__all__ = ["lint"]

PAPER_WARMUP_STEPS = 2000
"""OLMo 2's warmup (Table 3); section 3.2 provokes spikes by shortening it."""


def lint(recipe: Recipe, report: Reporter) -> None:
    m, opt = recipe.model, recipe.optimizer
    if m.norm == "pre":
        report.warning("W101", ("model", "norm"), "pre-norm: section 3.3.2 found norm on sublayer outputs "
                       "(\"reordered\") with QK-norm lowers the gradient spike score from 0.108 to 0.069",
                       "norm = \"reordered\"")
    if not m.qk_norm:
        report.warning("W102", ("model", "qk_norm"), "no QK-norm: section 3.3.2 pairs it with reordered norm "
                       "to keep attention logits from growing", "qk_norm = true")
    if opt.z_loss == 0:
        report.warning("W103", ("optimizer", "z_loss"), "z-loss off: section 3.3.3 uses it to keep the output "
                       "softmax from growing and destabilising training", "z_loss = 1e-5")
    if opt.eps >= 1e-6:
        report.warning("W104", ("optimizer", "eps"), f"AdamW eps {opt.eps:g}: section 3.4.1 found 1e-8 lowers "
                       "and stabilises the gradient norm early in training", "eps = 1e-8")
    if opt.decay_embeddings:
        report.warning("W105", ("optimizer", "decay_embeddings"), "weight decay on embeddings: section 3.4.2 "
                       "found it shrinks embeddings and raises gradient norms (spike score 0.16 vs 0.092)",
                       "decay_embeddings = false")
    _lint_masking(recipe, report)
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, PrepareStage) and "repeated_ngrams" not in stage.filters:
            report.warning("W107", ("stages", i, "filters"), "no repeated n-gram filter: section 2.4.1 removes "
                           "documents with 32+ repeated n-grams to avoid loss spikes",
                           "add \"repeated_ngrams\" to filters")
        if isinstance(stage, PretrainStage) and isinstance(stage.lr, (CosineSchedule, WsdSchedule)):
            steps = stage.steps or 0
            if stage.tokens and stage.batch_size and stage.seq_len:
                steps = stage.tokens // (stage.batch_size * stage.seq_len)
            warmup = stage.lr.warmup_steps
            if steps >= 20 * PAPER_WARMUP_STEPS and warmup < PAPER_WARMUP_STEPS // 4:
                report.warning("W108", ("stages", i, "lr", "warmup_steps"),
                               f"warmup of {warmup} steps is far shorter than OLMo 2's {PAPER_WARMUP_STEPS}: "
                               "section 3.2 provokes loss spikes precisely by shortening warmup",
                               f"warmup_steps = {PAPER_WARMUP_STEPS}")


def _lint_masking(recipe: Recipe, report: Reporter) -> None:
    """W107 where a training stage trains without repeated n-gram masking: on the stage that turns it off, or once
    on [data] for the stages that inherit it."""
    inherits_off = False
    for i, stage in enumerate(recipe.stages):
        if not isinstance(stage, TrainStage):
            continue
        if stage.ngram_masking is False:
            report.warning("W107", ("stages", i, "ngram_masking"), f"repeated n-gram masking off in {stage.name}: "
                           "section 3.1 traces loss spikes to instances with long repeated n-grams",
                           "ngram_masking = true")
        inherits_off |= stage.ngram_masking is None and not recipe.data.ngram_masking
    if inherits_off:
        report.warning("W107", ("data", "ngram_masking"), "repeated n-gram masking off: section 3.1 traces "
                       "loss spikes to instances with long repeated n-grams", "ngram_masking = true")
