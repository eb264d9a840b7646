"""`[[stages]]`: the recipe's steps, one class per `kind`.

Stages name their predecessor with `from` (and soups their `ingredients`); together they form
the stage DAG. Values left out here (a batch size, a sequence length) are inherited from the
predecessor by the plan, never by the spec.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from olmo2spec.posttrain.verifiers import VERIFIER_NAMES as VERIFIERS  # the one table of verifiers
from olmo2spec.spec.fields import (
    SpecValueError,
    doc,
    each,
    non_negative,
    one_of,
    positive,
    safe_name,
    seed_range,
    shown,
    unit_interval,
)
from olmo2spec.spec.schedules import Schedule
from olmo2spec.spec.training import OptimizerOverride
from olmo2spec.spec.types import AutoInt, Tokens

__all__ = [
    "StageSpec", "PrepareStage", "PretrainStage", "AnnealStage", "MicroannealStage", "SoupStage",
    "SftStage", "DpoStage", "RewardStage", "RlvrStage", "EvalStage", "ExportStage", "Stage",
    "TrainStage", "PostTrainStage", "ParallelStage",
]

FILTERS = ("repeated_ngrams", "code_word_frequency")


_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,127}$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _dataset_name(_inst: object, _attr: object, value: str) -> None:
    """A dataset is a directory under ${DATA_ROOT}/post-training/: one path component, no `..`."""
    if not _DATASET_NAME.fullmatch(value):
        raise SpecValueError(f"{shown(value)} is not a dataset name",
                             "name a directory under ${DATA_ROOT}/post-training/: up to 128 letters, digits and "
                             "_ . -, starting with a letter or digit, e.g. \"tulu-3-sft-olmo-2-mixture\"")


def _task_name(_inst: object, _attr: object, value: str) -> None:
    """Tasks become arguments of `olmes --task`: a leading '-' would be read as an option."""
    if not _TASK_NAME.fullmatch(value):
        raise SpecValueError(f"{shown(value)} is not a task name",
                             "OLMES task names look like \"gsm8k::olmes\": up to 128 letters, digits and "
                             "_ . : = + -, starting with a letter or digit")


def _auto_positive(_inst: object, _attr: object, value: object) -> None:
    from olmo2spec.spec.fields import SpecValueError

    if value != "auto" and not (isinstance(value, int) and value > 0):
        raise SpecValueError(f"must be a positive integer or \"auto\" (got {value!r})")


@attrs.frozen(kw_only=True)
class StageSpec:
    """Fields every stage has."""

    if TYPE_CHECKING:
        kind: str  # each kind's class declares it as a Literal field

    name: str = doc("Unique stage name; used in job names and file names.", validator=safe_name)
    description: str = doc("Free text for people; never used in scripts.", default="")
    from_: str | None = doc("The stage this one starts from (its final checkpoint; of an anneal, its first run's, "
                            "or the run `STAGE@seed:N` names).", default=None, key="from")
    nodes: int | None = doc("Nodes for this stage (default: cluster.nodes).", default=None, validator=positive)


@attrs.frozen(kw_only=True)
class PrepareStage(StageSpec):
    """Raw JSONL to token files, with the curation filters of section 2.4.1."""

    kind: Literal["prepare"] = doc("Stage kind.")
    sources: list[str] = doc("Sources to prepare (names under [sources]); empty: all.", factory=list)
    text_field: str = doc("JSON field holding the document text.", default="text")
    filters: list[str] = doc("Curation filters to apply.", factory=lambda: list(FILTERS),
                             validator=each(one_of(FILTERS)))


@attrs.frozen(kw_only=True)
class ParallelStage(StageSpec):
    """Stages that train. How a training stage is laid out; "auto" lets the plan choose from the memory estimate."""

    micro_batch: AutoInt = doc("Sequences per GPU per forward/backward.", default="auto",
                               validator=_auto_positive)
    shard_gpus: AutoInt = doc("GPUs an FSDP shard group spans (HSDP replicates across groups); "
                              "\"auto\": the smallest number of whole nodes whose memory fits.",
                              default="auto", validator=_auto_positive)
    activation_checkpointing: str = doc("'none', 'full' (every block), or 'auto' (only if needed to fit).",
                                        default="auto", validator=one_of(("auto", "none", "full")))
    fsdp_units: str = doc("What FSDP gathers at a time: 'block' (each transformer block its own unit, gathered "
                          "in turn so communication overlaps compute, as torchtitan does), 'model' (the whole "
                          "model one unit, gathered once per step and kept through backward: 2 collectives a "
                          "step instead of 2 per block), or 'auto' ('model' on CPU, where gloo's per-collective "
                          "cost dominates a step and nothing overlaps, when it fits; else 'block').",
                          default="auto", validator=one_of(("auto", "block", "model")))
    compile: bool = doc("torch.compile each block.", default=True)
    optimizer: OptimizerOverride = doc(
        "This stage's optimizer settings over the recipe's [optimizer]: only the keys given change, e.g. "
        "optimizer = { weight_decay = 0.0, betas = [0.9, 0.999] } (Tulu 3's post-training).",
        factory=OptimizerOverride)


@attrs.frozen(kw_only=True)
class TrainStage(ParallelStage):
    """Fields of stages that train on a token mix: pretrain, anneal, microanneal."""

    batch_size: int | None = doc("Global batch in sequences (default: the `from` stage's).", default=None,
                                 validator=positive)
    seq_len: int | None = doc("Sequence length in tokens (default: the `from` stage's).", default=None,
                              validator=positive)
    lr: Schedule = doc("Learning-rate schedule.")
    repeat_mix: bool = doc("Allow the stage to train on more tokens than its mix holds (epochs > 1).",
                           default=False)
    ngram_masking: bool | None = doc(
        "Mask the labels of this stage's instances that hold a repeated n-gram run (section 3.1); default: "
        "[data].ngram_masking. The released OLMo-2-0325-32B trained without it and skipped outlier steps "
        "instead (optimizer.name = \"skip_step_adamw\").", default=None)


@attrs.frozen(kw_only=True)
class PretrainStage(TrainStage):
    """The long first stage on mostly web data (section 2.3)."""

    kind: Literal["pretrain"] = doc("Stage kind.")
    mix: str = doc("Mix to train on (name under [mixes]).")
    tokens: Tokens | None = doc("Tokens to train on; rounded to whole steps. Give this or `steps`.",
                                default=None, validator=positive)
    steps: int | None = doc("Optimizer steps; give this or `tokens`.", default=None, validator=positive)
    data_seed: int | None = doc("Seed of the data order (default: recipe.seed).", default=None,
                                validator=seed_range)


@attrs.frozen(kw_only=True)
class AnnealStage(TrainStage):
    """Mid-training (section 4): one ingredient per data-order seed, LR decayed to 0."""

    kind: Literal["anneal"] = doc("Stage kind.")
    mix: str = doc("Mix to train on (name under [mixes]).")
    tokens: Tokens | None = doc("Tokens per ingredient; give this or `steps`.", default=None,
                                validator=positive)
    steps: int | None = doc("Optimizer steps per ingredient; give this or `tokens`.", default=None,
                            validator=positive)
    seeds: list[int] = doc("Data-order seeds, one ingredient run each (7B: 42, 42069, 666).",
                           validator=each(seed_range))
    restore_optimizer: bool = doc("Load the predecessor's optimizer state (OLMo 2: yes).", default=True)


@attrs.frozen(kw_only=True)
class MicroannealStage(TrainStage):
    """Section 4.4.2: a small anneal per candidate, mixed with general web data, to compare sources."""

    kind: Literal["microanneal"] = doc("Stage kind.")
    candidates: list[list[str]] = doc("Candidate source sets, one microanneal each: [[\"a\"], [\"a\", \"b\"]].")
    general: str = doc("The general web source the candidates are mixed with.")
    tokens: Tokens = doc("Tokens per microanneal run (the paper's were a few billion).", validator=positive)
    candidate_share: float = doc("Share of each run's tokens taken from the candidate (paper: 0.1 to 0.5).",
                                 default=0.5, validator=unit_interval)
    max_repeats: float = doc("Most times a candidate's tokens may be seen (the paper tried 1, 2 and 4); "
                             "a budget needing more is an error.", default=1.0, validator=positive)
    seed: int | None = doc("Data-order seed (default: recipe.seed).", default=None, validator=seed_range)


@attrs.frozen(kw_only=True)
class SoupStage(StageSpec):
    """Average ingredient checkpoints ('model souping', section 4.5)."""

    kind: Literal["soup"] = doc("Stage kind.")
    ingredients: list[str] = doc("Stages whose final checkpoints are averaged: every run of a stage named alone, "
                                 "one run of an anneal named with its seed, e.g. [\"anneal-100b@seed:1110\", "
                                 "\"anneal-300b\"].")
    weights: list[float] = doc("One weight per ingredient run (in the order the ingredients select them); empty: "
                               "uniform.", factory=list,
                               validator=each(non_negative))


@attrs.frozen(kw_only=True)
class PostTrainStage(ParallelStage):
    """Fields shared by SFT, DPO and RLVR (Tulu 3 recipe, section 5)."""

    dataset: str = doc("Dataset name, resolved under ${DATA_ROOT}/post-training/.", validator=_dataset_name)
    examples: int = doc("Examples (prompts) in the dataset; sets the number of steps.", validator=positive)
    batch_size: int = doc("Effective batch size in examples.", validator=positive)
    max_seq_len: int = doc("Longest sequence in tokens.", validator=positive)
    lr: Schedule = doc("Learning-rate schedule.")
    seed: int | None = doc("Seed (default: recipe.seed).", default=None, validator=seed_range)


@attrs.frozen(kw_only=True)
class SftStage(PostTrainStage):
    """Supervised finetuning on chat data, loss on assistant tokens only."""

    kind: Literal["sft"] = doc("Stage kind.")
    epochs: int = doc("Passes over the dataset (Tulu 3: 2).", validator=positive)
    loss: str = doc("'sum' over tokens (Table 17's best) or 'mean'.", default="sum",
                    validator=one_of(("sum", "mean")))
    chat_template: str = doc("Chat template; 'tulu' is OLMo 2's.", default="tulu", validator=one_of(("tulu",)))


@attrs.frozen(kw_only=True)
class DpoStage(PostTrainStage):
    """Preference tuning with (length-normalised) DPO."""

    kind: Literal["dpo"] = doc("Stage kind.")
    epochs: int = doc("Passes over the dataset.", default=1, validator=positive)
    beta: float = doc("DPO beta (Tulu 3 length-normalised: 5).", validator=positive)
    loss: str = doc("'dpo_norm' (length-normalised) or 'dpo'.", default="dpo_norm",
                    validator=one_of(("dpo_norm", "dpo")))


@attrs.frozen(kw_only=True)
class RewardStage(PostTrainStage):
    """A reward model on preference pairs (Bradley-Terry): the scalar model that initialises PPO's value
    function (paper Table 26). Its checkpoint is a scalar model, read only by an rlvr stage's `value_from`."""

    kind: Literal["reward"] = doc("Stage kind.")
    epochs: int = doc("Passes over the dataset (Table 26: 1).", default=1, validator=positive)


@attrs.frozen(kw_only=True)
class RlvrStage(PostTrainStage):
    """Reinforcement learning with verifiable rewards (PPO for 7B/13B, GRPO for 1B/32B)."""

    kind: Literal["rlvr"] = doc("Stage kind.")
    algorithm: str = doc("'ppo' or 'grpo'.", validator=one_of(("ppo", "grpo")))
    episodes: int = doc("Total episodes (prompts x samples) to train on.", validator=positive)
    samples_per_prompt: int = doc("Responses sampled per prompt (GRPO: 16).", default=1, validator=positive)
    kl_beta: float = doc("KL penalty coefficient.", validator=non_negative)
    kl_estimator: str = doc("Per-token estimator of KL(policy || reference): 'k1' (log-ratio), 'k2' (its square "
                            "/ 2) or 'k3' (exp(-r) - 1 + r: unbiased, never negative). GRPO adds it to the "
                            "loss (open-instruct: k3); PPO subtracts it from the reward (open-instruct: k1).",
                            default="k3", validator=one_of(("k1", "k2", "k3")))
    clip_eps: float = doc("PPO clipping coefficient.", default=0.2, validator=positive)
    value_coef: float = doc("Value-function loss coefficient (PPO).", default=0.1, validator=non_negative)
    gamma: float = doc("Discount factor.", default=1.0, validator=unit_interval)
    gae_lambda: float = doc("GAE lambda (PPO).", default=0.95, validator=unit_interval)
    update_epochs: int = doc("Policy updates per batch (PPO's K).", default=4, validator=positive)
    temperature: float = doc("Sampling temperature.", default=1.0, validator=positive)
    response_len: int = doc("Longest generated response in tokens.", default=2048, validator=positive)
    verifiers: list[str] = doc("Reward functions.", factory=lambda: list(VERIFIERS),
                               validator=each(one_of(VERIFIERS)))
    verifier_reward: float = doc("Reward for a verified answer (10 x score).", default=10.0)
    no_eos_penalty: float = doc("Reward for a response that never emits eos.", default=-10.0)
    value_from: str | None = doc("PPO: the reward stage whose final checkpoint initialises the value function, "
                                 "afresh at every run (paper section 5); GRPO has no value function: leave it "
                                 "out.", default=None)

    RETIRED_KEYS: ClassVar[dict[str, str]] = {
        "value_init_lr": "the reward model is a stage of its own now: add a `kind = \"reward\"` stage (its `lr` "
                         "is this value, paper Table 26) and name it in `value_from`; GRPO needs neither"}
    """Keys this class had once, each with what replaces it (the checker's message for a recipe still using one)."""


@attrs.frozen(kw_only=True)
class EvalStage(StageSpec):
    """Evaluation: held-out loss and generative tasks, or the OLMES suites on a cluster."""

    kind: Literal["eval"] = doc("Stage kind.")
    suite: str = doc("'olmes-base', 'olmes-instruct' or 'demo' (the toy recipe's math splits).",
                     validator=one_of(("olmes-base", "olmes-instruct", "demo")))
    tasks: list[str] = doc("Extra OLMES tasks by name, e.g. [\"gsm8k::olmes\"].", factory=list,
                           validator=each(_task_name))


@attrs.frozen(kw_only=True)
class ExportStage(StageSpec):
    """Convert the `from` stage's checkpoint for other tools."""

    kind: Literal["export"] = doc("Stage kind.")
    format: str = doc("'hf': a transformers Olmo2ForCausalLM directory.", default="hf",
                      validator=one_of(("hf",)))


# One member per row of olmo2spec/kinds.py's table (a test holds them to it).
Stage = (PrepareStage | PretrainStage | AnnealStage | MicroannealStage | SoupStage | SftStage | DpoStage
         | RewardStage | RlvrStage | EvalStage | ExportStage)
