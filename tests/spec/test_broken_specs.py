"""Broken recipes and the exact errors `olmo2spec check` gives for them.

Error messages are part of the contract: each case states all of stderr, line by line:
`FILE:LINE:COL` (relative to the repository root), code, dotted field, message, hint and
the closing count. Most recipes in tests/data/broken/ extend specs/tiny.toml and change one
thing, so the error points into the broken file; a few are self-contained; a few put the
mistake into a fragment (tests/data/broken/fragments/) to show that errors point there.
The `--set` cases check that overrides are typed, checked and located like the file.

To add a case: write tests/data/broken/NAME.toml and an entry "NAME" in CASES.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from olmo2spec.cli import main

ROOT = Path(__file__).resolve().parents[2]
BROKEN = "tests/data/broken"
TINY = "specs/tiny.toml"


class Case(NamedTuple):
    lines: tuple[str, ...]
    """Every line of stderr, exactly."""
    spec: str = ""
    """The recipe to check; by default tests/data/broken/<case name>.toml."""
    args: tuple[str, ...] = ()
    """Options after the recipe: --set, --strict."""


def _stage_header_line(name: str) -> int:
    """Line of the `[[stages]]` header of stage `name` in specs/tiny.toml (so edits there move no test)."""
    lines = (ROOT / "specs" / "tiny.toml").read_text().splitlines()
    at = lines.index(f'name = "{name}"')
    return max(i for i in range(at) if lines[i] == "[[stages]]") + 1


CASES: dict[str, Case] = {
    # -- Reading files: TOML syntax, extends and include (self-contained or into fragments) ----------------------
    "toml-syntax": Case(lines=(
        "tests/data/broken/toml-syntax.toml:7:14: error[E001]: invalid TOML: Expected newline or end of document "
        "after a statement",
        "  hint: see https://toml.io for the syntax; strings need quotes",
        "1 error, 0 warnings",
    )),
    "missing-extends": Case(lines=(
        "tests/data/broken/missing-extends.toml:1:11: error[E002]: file not found: specs/tiny-typo.toml",
        "  hint: paths in `extends` and `include` are relative to the file naming them",
        "1 error, 0 warnings",
    )),
    "extends-cycle": Case(lines=(
        "tests/data/broken/fragments/cycle.toml:2:11: error[E003]: recipe files extend or include each other in a "
        "cycle: tests/data/broken/extends-cycle.toml -> tests/data/broken/fragments/cycle.toml -> "
        "tests/data/broken/extends-cycle.toml",
        "  hint: remove one of the `extends`/`include` entries in the cycle",
        "1 error, 0 warnings",
    )),
    "extends-absolute": Case(lines=(
        "tests/data/broken/extends-absolute.toml:1:11: error[E002]: '/etc/passwd' is an absolute path",
        "  hint: recipes name files relative to themselves, e.g. \"base/olmo2.toml\" or \"../specs/tiny.toml\"",
        "1 error, 0 warnings",
    )),
    "include-not-toml": Case(lines=(
        "tests/data/broken/include-not-toml.toml:2:12: error[E002]: '../../../README.md' is not a .toml file",
        "  hint: recipes extend and include .toml files only",
        "1 error, 0 warnings",
    )),
    "deep-nesting": Case(lines=(
        "tests/data/broken/deep-nesting.toml:4:75: error[E004]: arrays and tables nest more than 64 deep",
        "  hint: recipes nest a few levels; flatten the value",
        "1 error, 0 warnings",
    )),
    # -- Keys: unknown (with did-you-mean) and missing -----------------------------------------------------------
    "unknown-key-top": Case(lines=(
        "tests/data/broken/unknown-key-top.toml:1:1: error[E011]: model: required key is missing",
        "tests/data/broken/unknown-key-top.toml:1:1: error[E011]: tokenizer: required key is missing",
        "tests/data/broken/unknown-key-top.toml:1:1: error[E011]: cluster: required key is missing",
        "tests/data/broken/unknown-key-top.toml:1:1: error[E011]: stages: required key is missing",
        "tests/data/broken/unknown-key-top.toml:6:1: error[E010]: modle: unknown key",
        "  hint: did you mean `model`?",
        "5 errors, 0 warnings",
    )),
    "unknown-key-model": Case(lines=(
        "tests/data/broken/unknown-key-model.toml:4:1: error[E010]: model.n_head: unknown key",
        "  hint: did you mean `n_heads`?",
        "1 error, 0 warnings",
    )),
    "unknown-key-stage": Case(lines=(
        "tests/data/broken/unknown-key-stage.toml:5:1: error[E010]: stages.pretrain.batch: unknown key",
        "  hint: did you mean `batch_size`?",
        "1 error, 0 warnings",
    )),
    "unknown-key-lr": Case(lines=(
        "tests/data/broken/unknown-key-lr.toml:5:8: error[E010]: stages.pretrain.lr.warmup: unknown key",
        "  hint: did you mean `warmup_steps`?",
        "1 error, 0 warnings",
    )),
    "stage-optimizer-unknown-key": Case(lines=(
        "tests/data/broken/stage-optimizer-unknown-key.toml:5:15: error[E010]: stages.sft.optimizer.weight_decy: "
        "unknown key",
        "  hint: did you mean `weight_decay`?",
        "1 error, 0 warnings",
    )),
    "departure-unknown-field": Case(lines=(
        "tests/data/broken/departure-unknown-field.toml:4:9: error[E013]: departures[0].field: "
        "'stages.pretrain.lr.warmup' names no recipe value: stages.pretrain.lr has no key 'warmup'",
        "  hint: did you mean 'warmup_steps'?",
        "tests/data/broken/departure-unknown-field.toml:9:9: error[E013]: departures[1].field: "
        "'stages.pretrian.batch_size' names no recipe value: no stage named 'pretrian'",
        "  hint: did you mean 'pretrain'?",
        "tests/data/broken/departure-unknown-field.toml:14:9: error[E013]: departures[2].field: 'optimizer' names "
        "no recipe value: 'optimizer' is a table, not a value: name one of its keys",
        "  hint: name a value as --set would, e.g. stages.pretrain.lr.warmup_steps",
        "3 errors, 0 warnings",
    )),
    "stage-optimizer-bad-value": Case(lines=(
        "tests/data/broken/stage-optimizer-bad-value.toml:5:23: error[E013]: stages.dpo.optimizer.betas: must be two "
        "numbers in [0, 1) (got [0.9])",
        "  hint: e.g. betas = [0.9, 0.95]",
        "tests/data/broken/stage-optimizer-bad-value.toml:5:45: error[E013]: stages.dpo.optimizer.weight_decay: must "
        "not be negative (got -0.1)",
        "tests/data/broken/stage-optimizer-bad-value.toml:5:63: error[E012]: stages.dpo.optimizer.grad_clip: expected "
        "a number (got '1')",
        "  hint: write it like 3e-4",
        "3 errors, 0 warnings",
    )),
    "stage-optimizer-z-loss": Case(lines=(
        "tests/data/broken/stage-optimizer-z-loss.toml:5:24: error[E026]: stages.sft.optimizer.z_loss: z_loss 1e-05 "
        "is not supported by the runtime's sft loss, which has no z-loss term (nor has open-instruct's)",
        "  hint: write optimizer = { z_loss = 0.0 } on the stage",
        "1 error, 0 warnings",
    )),
    "unknown-stage-kind": Case(lines=(
        "tests/data/broken/unknown-stage-kind.toml:5:8: error[E013]: stages.pretrain.kind: unknown stage kind "
        "'pretrian'",
        "  hint: did you mean 'pretrain'?",
        "1 error, 0 warnings",
    )),
    "missing-required": Case(lines=(
        "tests/data/broken/missing-required.toml:3:1: error[E011]: stages.eval-extra.suite: required key is "
        "missing",
        "1 error, 0 warnings",
    )),
    # -- Types (E012) --------------------------------------------------------------------------------------------
    "type-string-for-int": Case(lines=(
        "tests/data/broken/type-string-for-int.toml:4:11: error[E012]: model.d_model: expected an integer (got "
        "'256')",
        "  hint: write it like 4096",
        "1 error, 0 warnings",
    )),
    "type-bool-for-float": Case(lines=(
        "tests/data/broken/type-bool-for-float.toml:5:15: error[E012]: stages.pretrain.lr.peak: expected a number "
        "(got true)",
        "  hint: write it like 3e-4",
        "1 error, 0 warnings",
    )),
    "type-table-for-list": Case(lines=(
        "tests/data/broken/type-table-for-list.toml:5:9: error[E012]: stages.anneal.seeds: expected a list (got a "
        "table)",
        "  hint: write it like [42, 42069]",
        "1 error, 0 warnings",
    )),
    "type-bad-tokens": Case(lines=(
        "tests/data/broken/type-bad-tokens.toml:5:10: error[E012]: stages.pretrain.tokens: expected a token count "
        "such as \"50B\", \"3.895T\" or 5e12 (got '5X')",
        "  hint: write token counts like \"50B\", \"3.895T\" or 5e12",
        "1 error, 0 warnings",
    )),
    "type-bad-share": Case(lines=(
        "tests/data/broken/type-bad-share.toml:4:28: error[E012]: mixes.demo-pretrain.source_pct.demo-math: "
        "expected a source % such as 3.23, or repeats such as \"2x\" (got '2y')",
        "  hint: e.g. dclm = 3.23 or stackexchange = \"2x\"",
        "1 error, 0 warnings",
    )),
    # -- Values (E013) -------------------------------------------------------------------------------------------
    "value-negative": Case(lines=(
        "tests/data/broken/value-negative.toml:4:12: error[E013]: model.n_layers: must be greater than 0 (got -4)",
        "1 error, 0 warnings",
    )),
    "value-out-of-range": Case(lines=(
        "tests/data/broken/value-out-of-range.toml:4:11: error[E013]: model.dropout: must be between 0 and 1 (got "
        "1.5)",
        "1 error, 0 warnings",
    )),
    "value-bad-enum": Case(lines=(
        "tests/data/broken/value-bad-enum.toml:4:8: error[E013]: tokenizer.name: must be one of 'dolma2', 'bytes' "
        "(got 'dolma3')",
        "  hint: did you mean 'dolma2'?",
        "1 error, 0 warnings",
    )),
    "value-stage-name-space": Case(lines=(
        "tests/data/broken/value-stage-name-space.toml:4:8: error[E013]: stages.\"pre train\".name: 'pre train' "
        "is not a valid name",
        "  hint: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "1 error, 0 warnings",
    )),
    "value-stage-name-dotdot": Case(lines=(
        "tests/data/broken/value-stage-name-dotdot.toml:4:8: error[E013]: stages.\"../x\".name: '../x' is not a "
        "valid name",
        "  hint: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "1 error, 0 warnings",
    )),
    "value-stage-name-shell": Case(lines=(
        "tests/data/broken/value-stage-name-shell.toml:4:8: error[E013]: stages.\"$(rm)\".name: '$(rm)' is not a "
        "valid name",
        "  hint: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "1 error, 0 warnings",
    )),
    # -- Model and tokenizer shape (E020-E025) -------------------------------------------------------------------
    "heads-divide-d-model": Case(lines=(
        "tests/data/broken/heads-divide-d-model.toml:4:11: error[E020]: model.n_heads: n_heads 3 does not divide "
        "d_model 128",
        "  hint: pick n_heads so that d_model / n_heads is a whole head_dim, e.g. 4",
        "1 error, 0 warnings",
    )),
    "kv-heads-divide-heads": Case(lines=(
        "tests/data/broken/kv-heads-divide-heads.toml:4:14: error[E021]: model.n_kv_heads: n_kv_heads 3 does not "
        "divide n_heads 4",
        "  hint: each key/value head serves a whole group of query heads (GQA); use a divisor of n_heads",
        "1 error, 0 warnings",
    )),
    "odd-head-dim": Case(lines=(
        "tests/data/broken/odd-head-dim.toml:5:11: error[E022]: model.n_heads: head_dim d_model / n_heads = 33 is "
        "odd",
        "  hint: RoPE rotates pairs of dimensions; choose n_heads so head_dim is even (OLMo 2: 128)",
        "1 error, 0 warnings",
    )),
    "embedding-rows-small": Case(lines=(
        "tests/data/broken/embedding-rows-small.toml:4:18: error[E023]: tokenizer.embedding_rows: embedding_rows "
        "256 is smaller than vocab_size 258",
        "  hint: use at least 258, rounded up to a multiple of 128: 384",
        "1 error, 0 warnings",
    )),
    "eos-outside-vocab": Case(lines=(
        "tests/data/broken/eos-outside-vocab.toml:4:10: error[E024]: tokenizer.eos_id: eos_id 258 is outside the "
        "vocabulary (vocab_size 258)",
        "  hint: special-token ids must be below vocab_size",
        "1 error, 0 warnings",
    )),
    "seq-len-too-long": Case(lines=(
        "tests/data/broken/seq-len-too-long.toml:5:11: error[E025]: stages.pretrain.seq_len: seq_len 512 exceeds "
        "model.max_seq_len 256",
        "  hint: raise model.max_seq_len or shorten the stage's sequences",
        "1 error, 0 warnings",
    )),
    # -- Batch layout, schedule and budget (E030-E036) -----------------------------------------------------------
    "batch-not-divisible": Case(lines=(
        "tests/data/broken/batch-not-divisible.toml:5:14: error[E030]: stages.pretrain.batch_size: batch_size 15 "
        "is not divisible by the 2 data-parallel ranks (1 node x 2)",
        "  hint: use a multiple of 2 (e.g. 14), or change nodes",
        "1 error, 0 warnings",
    )),
    "rlvr-batch-not-whole-prompts": Case(lines=(
        "tests/data/broken/rlvr-batch-not-whole-prompts.toml:5:14: error[E030]: stages.rlvr.batch_size: batch_size 30 "
        "episodes is not a whole number of prompts of samples_per_prompt 8",
        "  hint: use a multiple of 8 (e.g. 24)",
        "1 error, 0 warnings",
    )),
    "micro-batch-not-dividing": Case(lines=(
        "tests/data/broken/micro-batch-not-dividing.toml:5:15: error[E030]: stages.pretrain.micro_batch: "
        "micro_batch 3 does not divide the 8 sequences per rank (batch_size 16 / 2 ranks)",
        "  hint: use a divisor of 8; gradient accumulation makes up the rest",
        "1 error, 0 warnings",
    )),
    "warmup-too-long": Case(lines=(
        "tests/data/broken/warmup-too-long.toml:5:23: error[E031]: stages.pretrain.lr.warmup_steps: warmup of 600 "
        "steps is not shorter than the stage's 586 steps",
        "  hint: shorten the warmup or train longer",
        "1 error, 0 warnings",
    )),
    "past-horizon": Case(lines=(
        "tests/data/broken/past-horizon.toml:5:18: error[E032]: stages.pretrain.lr.horizon: the stage runs 586 "
        "steps, past the cosine horizon of 122 steps (500,000 tokens)",
        "  hint: truncate before the horizon: raise `horizon` or train on fewer tokens",
        "1 error, 0 warnings",
    )),
    "tokens-and-steps": Case(lines=(
        "tests/data/broken/tokens-and-steps.toml:3:1: error[E033]: stages.pretrain: give exactly one of `tokens` "
        "and `steps`",
        "  hint: e.g. tokens = \"50B\"; steps follow from the batch size",
        "1 error, 0 warnings",
    )),
    "neither-tokens-nor-steps": Case(lines=(
        "tests/data/broken/neither-tokens-nor-steps.toml:3:1: error[E033]: stages.pretrain-2: give exactly one of "
        "`tokens` and `steps`",
        "  hint: e.g. tokens = \"50B\"; steps follow from the batch size",
        "1 error, 0 warnings",
    )),
    "shard-gpus-not-dividing": Case(lines=(
        "tests/data/broken/shard-gpus-not-dividing.toml:5:14: error[E034]: stages.pretrain.shard_gpus: shard_gpus "
        "3 does not divide the 2 GPUs",
        "  hint: use a divisor of 2, ideally whole nodes of 2",
        "1 error, 0 warnings",
    )),
    "duplicate-seeds": Case(lines=(
        "tests/data/broken/duplicate-seeds.toml:5:9: error[E035]: stages.anneal.seeds: seeds repeat: [42, 7, 42]",
        "  hint: ingredients with the same seed see the same data order; use distinct seeds",
        "1 error, 0 warnings",
    )),
    "missing-seeds": Case(lines=(
        "tests/data/broken/missing-seeds.toml:5:9: error[E035]: stages.anneal.seeds: an anneal needs at least one "
        "data-order seed",
        "  hint: e.g. seeds = [42, 42069, 666]",
        "1 error, 0 warnings",
    )),
    "soup-weights-count": Case(lines=(
        "tests/data/broken/soup-weights-count.toml:5:11: error[E036]: stages.soup.weights: 3 weights for 2 "
        "ingredient runs (anneal-seed42, anneal-seed42069)",
        "  hint: give one weight per run, or none",
        "1 error, 0 warnings",
    )),
    "soup-weights-zero": Case(lines=(
        "tests/data/broken/soup-weights-zero.toml:5:11: error[E036]: stages.soup.weights: weights sum to 0",
        "  hint: give at least one ingredient run a positive weight, or give no weights",
        "1 error, 0 warnings",
    )),
    # -- The stage graph (E040-E044) -----------------------------------------------------------------------------
    "unknown-from": Case(lines=(
        "tests/data/broken/unknown-from.toml:5:8: error[E040]: stages.anneal.from: no stage named 'pretrian'",
        "  hint: did you mean 'pretrain'?",
        "1 error, 0 warnings",
    )),
    "from-self": Case(lines=(
        "tests/data/broken/from-self.toml:5:8: error[E041]: stages.anneal.from: `from` names the stage itself",
        "  hint: name the stage it starts from",
        "1 error, 0 warnings",
    )),
    "stage-cycle": Case(lines=(
        "tests/data/broken/stage-cycle.toml:3:1: error[E041]: stages.sft: the stages depend on each other in a "
        "cycle: sft -> dpo -> sft",
        "  hint: a stage can only start from stages that finish before it; break the cycle",
        "1 error, 0 warnings",
    )),
    "duplicate-stage-name": Case(lines=(
        "tests/data/broken/duplicate-stage-name.toml:10:8: error[E042]: stages.eval-extra.name: stage name "
        "'eval-extra' is used twice",
        "  hint: give every stage its own name",
        "1 error, 0 warnings",
    )),
    "from-wrong-kind": Case(lines=(
        "tests/data/broken/from-wrong-kind.toml:5:8: error[E043]: stages.anneal.from: `from` 'prepare' is a "
        "prepare stage, which leaves no usable result here",
        "  hint: name a stage of kind pretrain, anneal, microanneal, soup, sft, dpo, rlvr",
        "1 error, 0 warnings",
    )),
    # PPO's value function starts from a reward stage's model; GRPO has none (paper section 5)
    "rlvr-ppo-without-value-from": Case(lines=(
        "tests/data/broken/rlvr-ppo-without-value-from.toml:3:1: error[E045]: stages.rlvr.value_from: PPO needs a "
        "value function to start from: `value_from` is missing",
        "  hint: name the reward stage whose model initialises it, e.g. value_from = \"reward\" (a `kind = "
        "\"reward\"` stage, paper Table 26)",
        "1 error, 0 warnings",
    )),
    "rlvr-grpo-with-value-from": Case(lines=(
        "tests/data/broken/rlvr-grpo-with-value-from.toml:5:14: error[E045]: stages.rlvr.value_from: GRPO has no "
        "value function, so `value_from` has nothing to initialise",
        "  hint: remove `value_from` (and the reward stage, if nothing else reads it)",
        "1 error, 0 warnings",
    )),
    "rlvr-value-from-wrong-kind": Case(lines=(
        "tests/data/broken/rlvr-value-from-wrong-kind.toml:6:14: error[E043]: stages.rlvr.value_from: `value_from` "
        "'dpo' is a dpo stage, which leaves no usable result here",
        "  hint: name a stage of kind reward",
        "1 error, 0 warnings",
    )),
    "rlvr-value-init-lr": Case(lines=(
        "tests/data/broken/rlvr-value-init-lr.toml:5:1: error[E010]: stages.rlvr.value_init_lr: no longer a setting",
        "  hint: the reward model is a stage of its own now: add a `kind = \"reward\"` stage (its `lr` is this "
        "value, paper Table 26) and name it in `value_from`; GRPO needs neither",
        "1 error, 0 warnings",
    )),
    "eval-from-reward-model": Case(lines=(  # a scalar model, not a language model: only value_from reads it
        "tests/data/broken/eval-from-reward-model.toml:5:8: error[E043]: stages.eval-instruct.from: `from` 'reward' "
        "is a reward stage, which leaves no usable result here",
        "  hint: name a stage of kind pretrain, anneal, microanneal, soup, sft, dpo, rlvr",
        "1 error, 0 warnings",
    )),
    "inherit-without-training": Case(lines=(
        "tests/data/broken/inherit-without-training.toml:5:16: error[E044]: stages.sft.lr.start: \"inherit\" "
        "needs a `from` stage that trains",
        "  hint: give a number, or set `from` to a pretraining or anneal stage",
        "1 error, 0 warnings",
    )),
    # -- Names that reach scripts and file names: the whole string checked, no keyword, no shared directory ------
    "name-trailing-newline": Case(lines=(
        "tests/data/broken/name-trailing-newline.toml:4:13: error[E013]: cluster.slurm.partition: 'gpu\\n' is "
        "not a valid SLURM name",
        "  hint: use letters, digits and _ . , : @ % + - only",
        "tests/data/broken/name-trailing-newline.toml:5:14: error[E013]: cluster.slurm.time_limit: "
        "'01:00:00\\n' is not a SLURM time limit",
        "  hint: write HH:MM:SS or D-HH:MM:SS, e.g. \"2-00:00:00\"",
        "tests/data/broken/name-trailing-newline.toml:6:9: error[E013]: cluster.slurm.extra: "
        "'--constraint=h100\\n' is not an sbatch option this bundle can pass safely",
        "  hint: write --name or --name=value, the value without spaces or quotes, e.g. \"--constraint=h100\"",
        "tests/data/broken/name-trailing-newline.toml:10:11: error[E013]: stages.sft.dataset: 'demo-chat\\n' is "
        "not a dataset name",
        "  hint: name a directory under ${DATA_ROOT}/post-training/: up to 128 letters, digits and _ . -, "
        "starting with a letter or digit, e.g. \"tulu-3-sft-olmo-2-mixture\"",
        "tests/data/broken/name-trailing-newline.toml:13:8: error[E013]: stages.\"eval-extra\\n\".name: "
        "'eval-extra\\n' is not a valid name",
        "  hint: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "tests/data/broken/name-trailing-newline.toml:17:9: error[E013]: stages.\"eval-extra\\n\".tasks: "
        "'gsm8k\\n' is not a task name",
        "  hint: OLMES task names look like \"gsm8k::olmes\": up to 128 letters, digits and _ . : = + -, starting "
        "with a letter or digit",
        "6 errors, 0 warnings",
    )),
    "source-name-newline": Case(lines=(
        "tests/data/broken/source-name-newline.toml:3:1: error[E013]: sources.\"extra\\n\": 'extra\\n' is not a "
        "valid name",
        "  hint: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "tests/data/broken/source-name-newline.toml:6:1: error[E013]: mixes.\"extra-mix\\n\": 'extra-mix\\n' is "
        "not a valid name",
        "  hint: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "2 errors, 0 warnings",
    )),
    "stage-name-reserved": Case(lines=(
        "tests/data/broken/stage-name-reserved.toml:4:8: error[E042]: stages.all.name: stage name 'all' is "
        "reserved: launch/local.sh reads it as every stage",
        "  hint: rename it, e.g. all-1",
        "1 error, 0 warnings",
    )),
    "soup-ingredient-twice": Case(lines=(
        "tests/data/broken/soup-ingredient-twice.toml:5:26: error[E042]: stages.soup.ingredients[1]: ingredient "
        "'anneal' is listed twice",
        "  hint: list each stage once; to count a run more, give weights",
        "1 error, 0 warnings",
    )),
    "soup-unknown-seed": Case(lines=(
        "tests/data/broken/soup-unknown-seed.toml:5:16: error[E046]: stages.soup.ingredients[0]: anneal 'anneal' has "
        "no run of seed 43",
        "  hint: select one of its seeds: anneal@seed:42, anneal@seed:42069",
        "1 error, 0 warnings",
    )),
    "soup-run-twice": Case(lines=(
        "tests/data/broken/soup-run-twice.toml:5:34: error[E042]: stages.soup.ingredients[1]: ingredient 'anneal' "
        "takes run 'anneal-seed42', which ingredient 'anneal@seed:42' takes too",
        "  hint: list each run once; to count a run more, give weights",
        "1 error, 0 warnings",
    )),
    "ref-malformed": Case(lines=(
        "tests/data/broken/ref-malformed.toml:5:16: error[E046]: stages.soup.ingredients[0]: ingredient "
        "'anneal@seed42' is not a stage reference",
        "  hint: write STAGE or STAGE@seed:N (one run of an anneal)",
        "tests/data/broken/ref-malformed.toml:9:8: error[E046]: stages.sft.from: `from` 'soup@seed:42' selects a "
        "seed, but soup stage 'soup' has no seeds to select from",
        "  hint: name the stage alone: soup",
        "2 errors, 0 warnings",
    )),
    "run-name-collision": Case(lines=(
        "tests/data/broken/run-name-collision.toml:5:8: error[E042]: stages.anneal-seed42.name: stage "
        "'anneal-seed42' names a run 'anneal-seed42', as stage 'anneal' does: their checkpoints would share a "
        "directory",
        "  hint: rename one of the stages",
        "tests/data/broken/run-name-collision.toml:11:1: error[E042]: mixes.microanneal-1: mix 'microanneal-1' "
        "has the name of a mix that microanneal 'microanneal' makes for a candidate",
        "  hint: rename the mix",
        "2 errors, 0 warnings",
    )),
    # -- Mixes (E050-E053) ---------------------------------------------------------------------------------------
    "unknown-source-in-mix": Case(lines=(
        "tests/data/broken/unknown-source-in-mix.toml:4:16: error[E050]: mixes.demo-pretrain.source_pct.demo-wbe: "
        "unknown source 'demo-wbe'",
        "  hint: did you mean 'demo-web'?",
        "1 error, 0 warnings",
    )),
    "unknown-mix-in-stage": Case(lines=(
        "tests/data/broken/unknown-mix-in-stage.toml:5:7: error[E050]: stages.pretrain.mix: unknown mix "
        "'demo-pretrian'",
        "  hint: did you mean 'demo-pretrain'?",
        "1 error, 0 warnings",
    )),
    "source-pct-over-100": Case(lines=(
        "tests/data/broken/source-pct-over-100.toml:4:28: error[E051]: mixes.demo-pretrain.source_pct.demo-math: "
        "source % 250 uses 'demo-math' 2.5 times",
        "  hint: repeats must be declared: write demo-math = \"2.5x\"",
        "1 error, 0 warnings",
    )),
    "mix-too-small": Case(lines=(
        "tests/data/broken/mix-too-small.toml:5:10: error[E052]: stages.anneal.tokens: the stage trains on "
        "1,250,304 tokens but its mix holds 1,000,000 (1.250 epochs)",
        "  hint: train on fewer tokens, enlarge the mix, or set repeat_mix = true to repeat it",
        "1 error, 0 warnings",
    )),
    "mix-neither": Case(lines=(
        "tests/data/broken/mix-neither.toml:3:1: error[E053]: mixes.empty: a mix needs exactly one of "
        "`source_pct` and `mix_pct`",
        "  hint: give source % per source like Table 13, or mix % with a `tokens` budget",
        "1 error, 0 warnings",
    )),
    "mix-both": Case(lines=(
        "tests/data/broken/mix-both.toml:3:1: error[E053]: mixes.demo-anneal: a mix needs exactly one of "
        "`source_pct` and `mix_pct`",
        "  hint: give source % per source like Table 13, or mix % with a `tokens` budget",
        "1 error, 0 warnings",
    )),
    "mix-pct-sum": Case(lines=(
        "tests/data/broken/mix-pct-sum.toml:4:1: error[E054]: mixes.demo-anneal.mix_pct: mix % values sum to "
        "90, not 100",
        "  hint: make the shares add up to 100 (within 0.01); they are the mix's composition",
        "1 error, 0 warnings",
    )),
    "mix-pct-zero": Case(lines=(
        "tests/data/broken/mix-pct-zero.toml:4:1: error[E054]: mixes.demo-anneal.mix_pct: mix % values sum to "
        "0, not 100",
        "  hint: make the shares add up to 100 (within 0.01); they are the mix's composition",
        "1 error, 0 warnings",
    )),
    "mix-empty": Case(lines=(
        "tests/data/broken/mix-empty.toml:4:1: error[E054]: mixes.demo-pretrain.source_pct: every source % is "
        "0: the mix is empty",
        "  hint: give at least one source a positive share",
        "1 error, 0 warnings",
    )),
    "mix-zero-budget": Case(lines=(
        "tests/data/broken/mix-zero-budget.toml:4:10: error[E054]: mixes.demo-anneal.tokens: the token budget "
        "is 0: the mix is empty",
        "  hint: give the budget the mix % divide, e.g. tokens = \"50B\"",
        "1 error, 0 warnings",
    )),
    "mix-rounds-to-zero": Case(lines=(
        "tests/data/broken/mix-rounds-to-zero.toml:3:1: error[E054]: mixes.demo-pretrain: the mix holds 0 "
        "tokens",
        "  hint: give its sources a size (tokens) and the mix larger shares",
        "1 error, 0 warnings",
    )),
    # -- Memory (E060) -------------------------------------------------------------------------------------------
    "memory-7b-one-gpu": Case(lines=(
        "tests/data/broken/memory-7b-one-gpu.toml:6:1: error[E060]: stages.pretrain: does not fit in 79.1 GiB per "
        "h100-80gb GPU: the smallest layout tried (shard over 1 GPU, micro-batch 1) needs 121.5 GiB (parameters "
        "27.2, gradients 27.2, optimizer 54.4, activations 1.8, logits 3.8)",
        "  hint: shard over more GPUs (shard_gpus), add nodes, turn on activation_checkpointing, or shorten "
        "sequences",
        "1 error, 0 warnings",
    )),
    # -- Errors inside an included or extended fragment point into the fragment ----------------------------------
    "include-bad-mix": Case(lines=(
        "tests/data/broken/fragments/bad-mix.toml:9:29: error[E051]: mixes.extra.source_pct.extra-math: source % "
        "300 uses 'extra-math' 3 times",
        "  hint: repeats must be declared: write extra-math = \"3x\"",
        "tests/data/broken/fragments/bad-mix.toml:9:34: error[E050]: mixes.extra.source_pct.demo-wbe: unknown "
        "source 'demo-wbe'",
        "  hint: did you mean 'demo-web'?",
        "2 errors, 0 warnings",
    )),
    "extends-bad-base": Case(lines=(
        "tests/data/broken/fragments/bad-base.toml:6:14: error[E021]: model.n_kv_heads: n_kv_heads 3 does not "
        "divide n_heads 8",
        "  hint: each key/value head serves a whole group of query heads (GQA); use a divisor of n_heads",
        "1 error, 0 warnings",
    )),
    # -- Several independent errors: all reported, in file order -------------------------------------------------
    "many-errors": Case(lines=(
        "tests/data/broken/many-errors.toml:6:12: error[E012]: model.n_layers: expected an integer (got 'four')",
        "  hint: write it like 4096",
        "tests/data/broken/many-errors.toml:7:1: error[E010]: model.dropuot: unknown key",
        "  hint: did you mean `dropout`?",
        "tests/data/broken/many-errors.toml:10:10: error[E013]: tokenizer.eos_id: must not be negative (got -1)",
        "tests/data/broken/many-errors.toml:14:14: error[E013]: stages.pretrain.batch_size: must be greater than "
        "0 (got 0)",
        "tests/data/broken/many-errors.toml:15:15: error[E012]: stages.pretrain.lr.peak: expected a number (got "
        "'high')",
        "  hint: write it like 3e-4",
        "tests/data/broken/many-errors.toml:19:9: error[E012]: stages.anneal.seeds: expected a list (got '42, 43')",
        "  hint: write it like [42, 42069]",
        "6 errors, 0 warnings",
    )),
    "many-rule-errors": Case(lines=(
        "tests/data/broken/many-rule-errors.toml:5:14: error[E021]: model.n_kv_heads: n_kv_heads 3 does not "
        "divide n_heads 4",
        "  hint: each key/value head serves a whole group of query heads (GQA); use a divisor of n_heads",
        "tests/data/broken/many-rule-errors.toml:8:18: error[E023]: tokenizer.embedding_rows: embedding_rows 200 "
        "is smaller than vocab_size 258",
        "  hint: use at least 258, rounded up to a multiple of 128: 384",
        "tests/data/broken/many-rule-errors.toml:9:10: error[E024]: tokenizer.pad_id: pad_id 300 is outside the "
        "vocabulary (vocab_size 258)",
        "  hint: special-token ids must be below vocab_size",
        "tests/data/broken/many-rule-errors.toml:12:28: error[E051]: mixes.demo-pretrain.source_pct.demo-code: "
        "source % 150 uses 'demo-code' 1.5 times",
        "  hint: repeats must be declared: write demo-code = \"1.5x\"",
        "tests/data/broken/many-rule-errors.toml:16:8: error[E040]: stages.anneal.from: no stage named 'pretrian'",
        "  hint: did you mean 'pretrain'?",
        "tests/data/broken/many-rule-errors.toml:17:9: error[E035]: stages.anneal.seeds: seeds repeat: [1, 1]",
        "  hint: ingredients with the same seed see the same data order; use distinct seeds",
        "6 errors, 0 warnings",
    )),
    # -- [cluster.env]: an allow-list; nothing that makes a process run or load code ----------------------------
    "env-runs-code": Case(lines=(
        "tests/data/broken/env-runs-code.toml:3:1: error[E013]: cluster.env: PYTHONWARNINGS is not among the "
        "variables a recipe may set (communication and threading only: some variables make a process run code)",
        "  hint: a recipe may set NCCL_*, TORCH_NCCL_*, FI_*, UCX_* (none naming a file, library or plugin), "
        "PYTORCH_CUDA_ALLOC_CONF, OMP_NUM_THREADS and a few more: see \"What a recipe may do\" in the README",
        "1 error, 0 warnings",
    )),
    "env-loads-plugin": Case(lines=(
        "tests/data/broken/env-loads-plugin.toml:3:1: error[E013]: cluster.env: NCCL_NET_PLUGIN is not among "
        "the variables a recipe may set: its PLUGIN makes the process read, load or write a file",
        "  hint: a recipe may set NCCL_*, TORCH_NCCL_*, FI_*, UCX_* (none naming a file, library or plugin), "
        "PYTORCH_CUDA_ALLOC_CONF, OMP_NUM_THREADS and a few more: see \"What a recipe may do\" in the README",
        "1 error, 0 warnings",
    )),
    # -- Numbers: finite, in range, fitting 64 bits; derived figures that would overflow -------------------------
    "lr-not-finite": Case(lines=(
        "tests/data/broken/lr-not-finite.toml:5:37: error[E013]: stages.sft.lr.start: must be a finite number "
        "(got nan)",
        "  hint: write a number such as 3e-4",
        "tests/data/broken/lr-not-finite.toml:9:37: error[E013]: stages.dpo.lr.start: must be a finite number "
        "(got inf)",
        "  hint: write a number such as 3e-4",
        "2 errors, 0 warnings",
    )),
    "lr-not-positive": Case(lines=(
        "tests/data/broken/lr-not-positive.toml:5:37: error[E013]: stages.sft.lr.start: a learning rate must be "
        "greater than 0 (got 0.0)",
        "  hint: e.g. start = 1e-5, or \"inherit\" to start where the `from` stage stopped",
        "tests/data/broken/lr-not-positive.toml:9:37: error[E013]: stages.rlvr.lr.start: a learning rate must "
        "be greater than 0 (got -5e-05)",
        "  hint: e.g. start = 1e-5, or \"inherit\" to start where the `from` stage stopped",
        "2 errors, 0 warnings",
    )),
    "mfu-zero": Case(lines=(
        "tests/data/broken/mfu-zero.toml:4:7: error[E013]: cluster.mfu: must be greater than 0 and at most 1 "
        "(got 0.0)",
        "  hint: e.g. 0.4 for 40%",
        "1 error, 0 warnings",
    )),
    "mfu-tiny": Case(lines=(
        "tests/data/broken/mfu-tiny.toml:2:1: error[E013]: cluster: plan.stages[1].cost.gpu_hours comes out as "
        "inf from these figures",
        "  hint: use realistic values for mfu, gpu_power_kw, pue, carbon_intensity and wue",
        "1 error, 0 warnings",
    )),
    "seed-too-large": Case(lines=(
        "tests/data/broken/seed-too-large.toml:4:8: error[E013]: recipe.seed: 18446744073709551616 does not fit "
        "in a 64-bit integer",
        "  hint: TOML integers lie between -2**63 and 2**63-1",
        "tests/data/broken/seed-too-large.toml:8:14: error[E013]: stages.anneal.seeds[1]: 9223372036854775808 "
        "does not fit in a 64-bit integer",
        "  hint: TOML integers lie between -2**63 and 2**63-1",
        "2 errors, 0 warnings",
    )),
    "soup-weights-underflow": Case(lines=(
        "tests/data/broken/soup-weights-underflow.toml:5:11: error[E036]: stages.soup.weights: weight "
        "9.99989e-321 of anneal-seed42069 is 0 next to the largest, 1e+300",
        "  hint: give weights of comparable size; 0 leaves a run out",
        "1 error, 0 warnings",
    )),
    "share-not-finite": Case(lines=(
        "tests/data/broken/share-not-finite.toml:4:44: error[E012]: mixes.demo-pretrain.source_pct.demo-code: a "
        "source % must be a finite number, 0 or more (got nan)",
        "  hint: e.g. dclm = 3.23 or stackexchange = \"2x\"",
        "tests/data/broken/share-not-finite.toml:4:61: error[E012]: mixes.demo-pretrain.source_pct.demo-math: a "
        "source % must be a finite number, 0 or more (got inf)",
        "  hint: e.g. dclm = 3.23 or stackexchange = \"2x\"",
        "2 errors, 0 warnings",
    )),
    # -- --set: typed, checked and located like the file ---------------------------------------------------------
    "set-heads": Case(spec=TINY, args=("--set", "model.n_heads=3"), lines=(
        "--set:1:1: error[E020]: model.n_heads: n_heads 3 does not divide d_model 128",
        "  hint: pick n_heads so that d_model / n_heads is a whole head_dim, e.g. 4",
        "1 error, 0 warnings",
    )),
    "set-unknown-key": Case(spec=TINY, args=("--set", "model.n_head=3"), lines=(
        "--set:1:1: error[E010]: model.n_head: unknown key",
        "  hint: did you mean `n_heads`?",
        "1 error, 0 warnings",
    )),
    "set-wrong-types": Case(
        spec=TINY,
        args=("--set", 'model.n_layers="4"', "--set", "stages.pretrain.lr.peak=true"),
        lines=(
            "--set:1:1: error[E012]: model.n_layers: expected an integer (got '4')",
            "  hint: write it like 4096",
            "--set:2:1: error[E012]: stages.pretrain.lr.peak: expected a number (got true)",
            "  hint: write it like 3e-4",
            "2 errors, 0 warnings",
        ),
    ),
    "set-missing-equals": Case(spec=TINY, args=("--set", "model.n_heads"), lines=(
        "--set:1:1: error[E070]: bad --set: expected KEY=VALUE, got 'model.n_heads'",
        "  hint: write --set stages.pretrain.lr.peak=4e-4",
        "1 error, 0 warnings",
    )),
    "set-unknown-stage": Case(spec=TINY, args=("--set", "stages.pretrian.batch_size=32"), lines=(
        "--set:1:1: error[E070]: stages.pretrian.batch_size: no stage named 'pretrian' (stages: prepare, "
        "pretrain, microanneal, anneal, soup, eval-base, sft, dpo, rlvr, eval-instruct, export, reward)",
        "  hint: did you mean 'pretrain'?",
        "1 error, 0 warnings",
    )),
    "set-huge-model-on-cpu": Case(spec=TINY, args=("--set", "model.n_layers=8000"), lines=(
        f"specs/tiny.toml:{_stage_header_line('pretrain')}:1: error[E060]: stages.pretrain: does not fit in 8.0 GiB "
        "per CPU process: the smallest "
        "layout tried (shard over 2 GPUs, micro-batch 8) needs 21.1 GiB (parameters 3.2, gradients 3.2, optimizer "
        "6.4, activations 7.8, logits 0.0)",
        "  hint: shard over more GPUs (shard_gpus), add nodes, turn on activation_checkpointing, or shorten "
        "sequences",
        "1 error, 0 warnings",
    )),
    "set-unknown-sink": Case(spec=TINY, args=("--set", 'runtime.metrics_sinks=["tensorbord"]'), lines=(
        "--set:1:1: error[E013]: runtime.metrics_sinks: must be one of 'tensorboard', 'wandb' (got 'tensorbord')",
        "  hint: did you mean 'tensorboard'?",
        "1 error, 0 warnings",
    )),
    "set-sink-twice": Case(spec=TINY, args=("--set", 'runtime.metrics_sinks=["wandb", "wandb"]'), lines=(
        "--set:1:1: error[E013]: runtime.metrics_sinks: 'wandb' listed more than once",
        "  hint: list each sink once",
        "1 error, 0 warnings",
    )),
    # -- --strict: lint warnings become errors -------------------------------------------------------------------
    "strict-eps": Case(args=("--strict",), lines=(
        "tests/data/broken/strict-eps.toml:4:7: error[W104]: optimizer.eps: AdamW eps 1e-05: section 3.4.1 found "
        "1e-8 lowers and stabilises the gradient norm early in training",
        "  hint: eps = 1e-8",
        "1 error, 0 warnings",
    )),
    "strict-wandb-project-without-sink": Case(spec=TINY, args=("--strict", "--set", 'runtime.wandb_project="runs"'),
                                              lines=(
        "--set:1:1: error[W201]: runtime.wandb_project: a W&B project without the 'wandb' sink logs nothing",
        '  hint: add "wandb" to runtime.metrics_sinks, or drop wandb_project',
        "1 error, 0 warnings",
    )),
}


def _without_not_runnable(lines: list[str]) -> list[str]:
    """stderr without the W301 diagnostics (and their hints), the closing count lowered to match.

    specs/tiny.toml's rlvr stage is not yet runnable, so every recipe extending it gets
    a W301 for it; tests/test_kinds.py tests those, and the cases here state the rest.
    """
    kept: list[str] = []
    dropped = {"error": 0, "warning": 0}
    dropping = False
    for line in lines:
        found = re.search(r": (error|warning)\[W301\]: ", line)
        if found:
            dropped[found.group(1)] += 1
        elif not (dropping and line.startswith("  hint: ")):
            kept.append(line)
        dropping = bool(found)
    count = re.fullmatch(r"(\d+) errors?, (\d+) warnings?", kept[-1]) if kept else None
    if count and any(dropped.values()):
        errors, warnings = int(count[1]) - dropped["error"], int(count[2]) - dropped["warning"]
        kept[-1] = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    return kept


def _argv(name: str, case: Case) -> list[str]:
    return ["check", case.spec or f"{BROKEN}/{name}.toml", *case.args]


def _tree() -> dict[str, tuple[int, int]]:
    """Every file of the repository (caches aside) with its size and modification time."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), ROOT)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_broken_spec(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    case = CASES[name]
    before = _tree()
    status = main(_argv(name, case))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "internal error" not in err
    assert _without_not_runnable(err.splitlines()) == list(case.lines)
    assert err.endswith("\n")
    assert out == ""
    assert status == 2
    assert _tree() == before, "checking a recipe wrote files"


def test_every_broken_recipe_has_a_case() -> None:
    recipes = {path.stem for path in (ROOT / BROKEN).glob("*.toml")}
    used = {Path(case.spec).stem if case.spec else name for name, case in CASES.items()}
    assert recipes - used == set()


def test_without_strict_the_lint_is_a_warning(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    status = main(["check", f"{BROKEN}/strict-eps.toml"])
    out, err = capsys.readouterr()
    assert status == 0
    warning = [line.replace("error[W104]", "warning[W104]") for line in CASES["strict-eps"].lines[:-1]]
    assert _without_not_runnable(err.splitlines()) == warning
    warnings = 1 + sum(1 for line in err.splitlines() if "warning[W301]" in line)  # a kind without a runner
    assert out.startswith("ok: tests/data/broken/strict-eps.toml: ")
    assert out.endswith(f", {warnings} warning{'s' * (warnings != 1)}\n")


def test_the_command_line_exits_2_without_importing_torch() -> None:
    """One case through a real process: the exit status, stderr, and no torch import."""
    case = CASES["many-errors"]
    code = ("import sys\nfrom olmo2spec.cli import main\nstatus = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, *_argv("many-errors", case)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert _without_not_runnable(result.stderr.splitlines()) == list(case.lines)
    assert result.stdout == ""
