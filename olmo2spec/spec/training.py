"""`[optimizer]`, `[data]` and `[checkpoint]`: how every training stage optimises and reads."""

from __future__ import annotations

from typing import Any

import attrs

from olmo2spec.spec.fields import doc, each, non_negative, one_of, positive, safe_name, unit_interval

__all__ = ["OptimizerSpec", "OptimizerOverride", "resolve_optimizer", "DataSpec", "CheckpointSpec", "RuntimeSpec",
           "METRICS_SINKS"]

METRICS_SINKS = ("tensorboard", "wandb")
"""Where rank 0 can send each metrics record besides metrics.jsonl."""


def _no_repeats(_inst: object, _attr: object, value: list[str]) -> None:
    from olmo2spec.spec.fields import SpecValueError

    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise SpecValueError(f"{', '.join(repr(v) for v in twice)} listed more than once", "list each sink once")


def _two_betas(_inst: object, _attr: object, value: list[float] | None) -> None:
    from olmo2spec.spec.fields import SpecValueError

    if value is not None and (len(value) != 2 or not all(0 <= b < 1 for b in value)):
        raise SpecValueError(f"must be two numbers in [0, 1) (got {value!r})", "e.g. betas = [0.9, 0.95]")


@attrs.frozen(kw_only=True)
class OptimizerSpec:
    """AdamW as OLMo 2 uses it (section 3.4, Table 3)."""

    name: str = doc("Optimizer; only 'adamw' is supported.", default="adamw", validator=one_of(("adamw",)))
    betas: list[float] = doc("Adam (beta1, beta2).", factory=lambda: [0.9, 0.95], validator=_two_betas)
    eps: float = doc("Adam epsilon (section 3.4.1: 1e-8 lowers gradient-norm spikes).", default=1e-8,
                     validator=positive)
    weight_decay: float = doc("Decoupled weight decay.", default=0.1, validator=non_negative)
    decay_embeddings: bool = doc("Apply weight decay to the token embedding (OLMo 2: no, section 3.4.2).",
                                 default=False)
    decay_norms: bool = doc("Apply weight decay to norm weights (OLMo 2: yes).", default=True)
    grad_clip: float = doc("Clip the global gradient norm to this value.", default=1.0, validator=positive)
    z_loss: float = doc("Weight of the z-loss, 1e-5 x logsumexp^2 (section 3.3.3, Table 1).", default=1e-5,
                        validator=non_negative)


@attrs.frozen(kw_only=True)
class OptimizerOverride:
    """A training stage's `optimizer = { ... }`: the keys given replace the recipe's [optimizer] for that stage
    (post-training uses no weight decay and AdamW's default betas, where pretraining does not)."""

    betas: list[float] | None = doc("Adam (beta1, beta2) of this stage.", default=None, validator=_two_betas)
    eps: float | None = doc("Adam epsilon of this stage.", default=None, validator=positive)
    weight_decay: float | None = doc("Decoupled weight decay of this stage.", default=None, validator=non_negative)
    decay_embeddings: bool | None = doc("Apply weight decay to the token embedding in this stage.", default=None)
    decay_norms: bool | None = doc("Apply weight decay to norm weights in this stage.", default=None)
    grad_clip: float | None = doc("Clip the global gradient norm to this value in this stage.", default=None,
                                  validator=positive)
    z_loss: float | None = doc("Weight of the z-loss in this stage.", default=None, validator=non_negative)

    def given(self) -> dict[str, Any]:
        """The keys the stage sets, by field name."""
        return {a.name: getattr(self, a.name) for a in attrs.fields(OptimizerOverride)
                if getattr(self, a.name) is not None}


def resolve_optimizer(recipe: OptimizerSpec, stage: OptimizerOverride) -> OptimizerSpec:
    """The stage's optimizer: the recipe's [optimizer] with the stage's keys over it."""
    return attrs.evolve(recipe, **stage.given())


@attrs.frozen(kw_only=True)
class DataSpec:
    """How token files are read at train time."""

    root: str = doc("Where `${DATA_ROOT}` in source paths points when the bundle runs; "
                    "'env' reads the DATA_ROOT environment variable.", default="env")
    ngram_masking: bool = doc("Mask the labels of instances with a repeated n-gram run (section 3.1).",
                              default=True)
    ngram_max_period: int = doc("Longest n-gram period checked by the masking.", default=13, validator=positive)
    ngram_min_repeats: int = doc("Repeats in a row that trigger the masking.", default=32, validator=positive)
    instance_filter_warn_share: float = doc(
        "Warn when more than this share of instances is masked.", default=0.01, validator=unit_interval)


@attrs.frozen(kw_only=True)
class CheckpointSpec:
    """Checkpoint policy for every training stage; retention is explicit, nothing is deleted silently."""

    every_steps: int = doc("Save a checkpoint every this many steps (at the first metrics boundary, "
                           "runtime.log_every, at or after each multiple) and at the end.", default=1000,
                           validator=positive)
    keep_last: int = doc("Temporary checkpoints kept; older ones are deleted.", default=3, validator=positive)
    permanent_every: int = doc("Every this many steps a checkpoint is kept forever (0: none).", default=10000,
                               validator=non_negative)
    async_save: bool = doc("Save in the background while training continues.", default=True)
    min_free_gib: float = doc("Free disk a node needs under the checkpoint directory before a stage starts.",
                              default=50.0, validator=non_negative)


@attrs.frozen(kw_only=True)
class RuntimeSpec:
    """`[runtime]`: habits of the training loop (paper section 6.4)."""

    log_every: int = doc("Read metrics from the device, reduce and write them every this many steps "
                         "(the only host-device syncs of the loop).", default=10, validator=positive)
    gc_every: int = doc("Python's GC is disabled; every rank collects (generation 1) every this many steps, "
                        "all at the same step.", default=50, validator=positive)
    spike_window: int = doc("Values in the rolling window of the spike score (paper: 1000).", default=1000,
                            validator=positive)
    spike_sigmas: float = doc("Distance from the rolling mean, in standard deviations, that counts as a spike "
                              "(paper: 7).", default=7.0, validator=positive)
    metrics_sinks: list[str] = doc(
        "Where rank 0 also sends every metrics record: 'tensorboard' (event files in <run dir>/tensorboard) and "
        "'wandb' (Weights & Biases; key, entity and mode from WANDB_API_KEY, WANDB_ENTITY, WANDB_MODE). "
        "Empty: metrics.jsonl only.", factory=list, validator=[each(one_of(METRICS_SINKS)), _no_repeats])
    wandb_project: str = doc("The Weights & Biases project of the runs (with 'wandb' in metrics_sinks); each run "
                             "is named <recipe>-<run> and grouped by recipe.", default="olmo2spec",
                             validator=safe_name)
