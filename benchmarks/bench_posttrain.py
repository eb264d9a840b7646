"""Post-training throughput against TRL, same run: SFT tokens/s, DPO pairs/s, GRPO episodes/s.

One tiny-recipe model (specs/tiny.toml's shapes, fp32), its weights copied into transformers'
Olmo2ForCausalLM for TRL (what an HF export of it holds), the demo post-training data
(`olmo2spec demo-data`, in a temporary directory) in the Tulu chat format, which TRL renders through
the chat template the export carries (runtime/export_hf.py) into the same ids. The same threads,
the tiny recipe's batch sizes and lengths, AdamW at a constant lr, weight decay 0, gradient
clipping at 1.0, fp32 on both sides (TRL's bf16 default is turned off).

What a step is, on each side:
- ours: the stage's step as runtime/sft.py and runtime/dpo.py run it (forward, backward, clip,
  AdamW from runtime/optim.py) on batches built before the clock starts;
- TRL: its Trainer's step timed from `on_step_begin` to `on_step_end` (the trainer's `training_step`
  with TRL's loss and its metrics, clip, optimizer and scheduler step); the collation of the
  batch happens before `on_step_begin` and is not timed, like ours.
- `grpo`: ours is the rlvr stage's own trainer (runtime/rlvr.py, in this process as a group of one,
  started from the weights instead of a checkpoint) and a step its `train_step`: 4 prompts x 8
  samples from one KV-cached decode (up to 64 tokens), the gsm8k verifier, the reference's
  log-probs, 4 optimizer steps over the rollout (micro-batches of 16). TRL's GRPOTrainer (no vLLM:
  transformers' `generate`, KV-cached too) with generation batches of 32 completions, 8 per
  prompt, `num_iterations` 4: a round is its 4 steps, the first of which generates, scores and
  computes the reference's and the old policy's log-probs. Same reward function (10 x gsm8k),
  KL beta 0.05, clip 0.2, temperature 1; episodes/s of generation and update together.

- `sft`: ours packs each step's 16 conversations into rows of 256 tokens (a block-diagonal mask);
  TRL's SFTTrainer pads them to the batch's longest (its default: packing=False), prompt/completion
  form, loss on the completion. Both count the conversations' tokens (padding is not work done).
- `dpo`: 16 pairs a step, `dpo_norm` (TRL's `sigmoid_norm`), beta 5. The reference log-probs are
  computed once before training on both sides (ours: cached by the stage; TRL:
  `precompute_ref_log_probs=True`) and not timed: a step is the policy's forward and backward of
  the 32 sequences.

The two alternate (a callback runs one of our steps after each of TRL's, after each 4 for GRPO,
inside its `train()`), so a shared machine's load falls on both alike; after a warm-up round, a
round is one step of ours and its TRL counterpart; a side's figure is the median over the rounds
of a round's work per second. Each part ends with its `bench posttrain-NAME` line. `--only sft,dpo`
runs a subset; `--rounds N` sets every part's rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads them: nothing here may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"

import numpy as np
import torch

from olmo2spec.compiler import check
from olmo2spec.data.chat import TULU_TEMPLATE, chat_file, read_chat_file, read_jsonl_records
from olmo2spec.data.demo import build_demo_corpus
from olmo2spec.data.preferences import PreferenceBatches, read_preference_file
from olmo2spec.data.sft_batches import SftBatches
from olmo2spec.data.tokenizer import load_tokenizer
from olmo2spec.plan.plan import Plan, PostTrainStagePlan
from olmo2spec.runtime.dpo_loss import dpo_losses, response_logps
from olmo2spec.runtime.export_hf import bytes_tokenizer_json, hf_config
from olmo2spec.runtime.loss import weighted_ce
from olmo2spec.runtime.model import ModelArgs, Transformer
from olmo2spec.runtime.optim import build_optimizer

ROOT = Path(__file__).resolve().parent.parent
LR = 1e-5
ROUNDS = {"sft": 8, "dpo": 6, "grpo": 4}
"""Timed rounds of each part (after a warm-up round): a GRPO round is a rollout and 4 optimizer steps."""

Step = Callable[[int], float]
"""Runs step i (i = 0 is the warm-up), returns the work it did (tokens, pairs or episodes)."""


# --- the two models ---------------------------------------------------------------------------------------------


def our_model(plan: Plan) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    return model.train()


def hf_model(plan: Plan, ours: Transformer) -> Any:
    """transformers' Olmo2ForCausalLM holding our model's weights (an HF export's, without the disk)."""
    from transformers import Olmo2Config, Olmo2ForCausalLM

    model = Olmo2ForCausalLM(Olmo2Config(**hf_config(plan))).float()
    model.config._attn_implementation = "sdpa"
    state = {k if k.startswith("lm_head.") else f"model.{k}": v for k, v in ours.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return model


def hf_tokenizer() -> Any:
    """The byte tokenizer with the Tulu chat template, as a chat model's HF export carries it."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(bytes_tokenizer_json()), bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token="<|pad|>", unk_token="<|endoftext|>", chat_template=TULU_TEMPLATE)


def our_optimizer(model: torch.nn.Module, stage: PostTrainStagePlan) -> torch.optim.AdamW:
    optimizer = build_optimizer(model, stage.optimizer)
    for group in optimizer.param_groups:
        group["lr"] = LR
    return optimizer


def our_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, stage: PostTrainStagePlan) -> None:
    """The Trainer's optimizer_step: clip to the stage's norm, step, clear."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), stage.optimizer.grad_clip, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trl_args(stage: PostTrainStagePlan, out: Path, batch: int) -> dict[str, Any]:
    """TRL config fields every part shares: the stage's optimizer, fp32, no logging, saving or evaluation."""
    betas = stage.optimizer.betas
    return {"output_dir": str(out), "per_device_train_batch_size": batch, "learning_rate": LR,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.0, "adam_beta1": betas[0],
            "adam_beta2": betas[1], "adam_epsilon": stage.optimizer.eps, "max_grad_norm": stage.optimizer.grad_clip,
            "optim": "adamw_torch", "bf16": False, "use_cpu": True, "report_to": [], "save_strategy": "no",
            "logging_strategy": "no", "eval_strategy": "no", "dataloader_num_workers": 0, "seed": 0,
            "disable_tqdm": True}


# --- timing -----------------------------------------------------------------------------------------------------


def alternate(name: str, unit: str, trainer: Any, trl_work: Callable[[Any], float], ours: Step, rounds: int,
              details: str, trl_steps: int = 1) -> list[float]:
    """Run TRL's `train()` for (1 + rounds) x trl_steps steps and one of our steps after each `trl_steps` of its
    own, so the two alternate (a shared machine's load falls on both alike); the first round is a warm-up. A
    side's figure is the median over the rounds of a round's work per second; prints the part's `bench` line."""
    from transformers import PrinterCallback, TrainerCallback

    trl_rates: list[float] = []
    our_rates: list[float] = []
    work: list[float] = []
    seconds: list[float] = []
    clock = [0.0]

    class Alternate(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            clock[0] = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            seconds.append(time.perf_counter() - clock[0])
            if len(seconds) % trl_steps:
                return
            trl_rates.append(sum(work[-trl_steps:]) / sum(seconds[-trl_steps:]))
            i = len(our_rates)
            start = time.perf_counter()
            done = ours(i)
            our_rates.append(done / (time.perf_counter() - start))

    inner = trainer.training_step

    def counted(model: Any, inputs: Any, *rest: Any, **kw: Any) -> Any:
        work.append(trl_work(inputs))
        return inner(model, inputs, *rest, **kw)

    trainer.training_step = counted
    trainer.remove_callback(PrinterCallback)  # its end-of-train summary line; the report is ours
    trainer.add_callback(Alternate())
    trainer.args.max_steps = (rounds + 1) * trl_steps
    trainer.train()
    assert len(trl_rates) == len(our_rates) == rounds + 1, (len(trl_rates), len(our_rates))
    a, b = our_rates[1:], trl_rates[1:]
    o, t = statistics.median(a), statistics.median(b)
    print(f"{name}: {details}; {rounds} rounds")
    print(f"  olmo2spec: median {o:,.2f} {unit} (rounds {', '.join(f'{x:,.2f}' for x in a)})")
    print(f"  TRL:       median {t:,.2f} {unit} (rounds {', '.join(f'{x:,.2f}' for x in b)})")
    print(f"bench posttrain-{name}: ours={o:.2f} {unit} baseline={t:.2f} {unit} ratio={o / t:.3f}", flush=True)
    return seconds[trl_steps:]  # TRL's timed steps' seconds


# --- SFT --------------------------------------------------------------------------------------------------------


def bench_sft(plan: Plan, data: Path, work: Path, rounds: int) -> None:
    import datasets
    import trl

    stage, steps = plan.stage("sft"), rounds
    assert isinstance(stage, PostTrainStagePlan)
    batch, seq = stage.batch_size, stage.max_seq_len
    tokenizer = load_tokenizer(plan.tokenizer.name)
    path = chat_file(data, "demo-chat")
    n = batch * (steps + 1)
    examples = read_chat_file(path, tokenizer, limit=n)
    batches = SftBatches(examples, batch_size=batch, epochs=1, seq_len=seq, seed=0, loss=str(stage.hyperparameters[
        "loss"]), pad_id=tokenizer.pad_id, micro_rows=batch)
    assert batches.steps == steps + 1 and not batches.cut

    model = our_model(plan)
    hf = hf_model(plan, model)
    optimizer = our_optimizer(model, stage)
    ready = []
    for s in range(batches.steps):
        b = batches.batch(s)
        ready.append(([torch.from_numpy(a) for a in (b.tokens, b.labels, b.positions, b.doc_ids, b.weights)],
                      batches.tokens_before(s + 1) - batches.tokens_before(s)))

    def ours(i: int) -> float:
        (tokens, labels, positions, doc_ids, weights), count = ready[i % len(ready)]
        weighted_ce(model(tokens, positions=positions, doc_ids=doc_ids), labels, weights).backward()
        our_update(model, optimizer, stage)
        return float(count)

    records = read_jsonl_records(path, lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                                 limit=n)
    config = trl.SFTConfig(**trl_args(stage, work / "sft", batch), max_length=seq, packing=False,
                           completion_only_loss=True, dataset_num_proc=None)
    trainer = trl.SFTTrainer(model=hf, args=config, train_dataset=datasets.Dataset.from_list(records),
                             processing_class=hf_tokenizer())
    # the same ids as ours: TRL renders the conversations through the export's chat template
    ours_ids = sorted(e.ids.tolist() for e in examples)
    assert sorted(trainer.train_dataset[i]["input_ids"] for i in range(n)) == ours_ids
    rows = ready[0][0][0].shape[0]
    alternate("sft", "tokens/s", trainer, lambda inputs: float(inputs["attention_mask"].sum()), ours, rounds,
            f"steps of {batch} demo conversations (~{ready[0][1]} tokens), ours packed into {rows} rows of "
            f"{seq}, TRL SFTTrainer padded to the batch's longest; conversation tokens/s")


# --- DPO --------------------------------------------------------------------------------------------------------


def bench_dpo(plan: Plan, data: Path, work: Path, rounds: int) -> None:
    import datasets
    import trl

    stage = plan.stage("dpo")
    assert isinstance(stage, PostTrainStagePlan)
    batch, seq = stage.batch_size, stage.max_seq_len
    beta, loss = float(stage.hyperparameters["beta"]), str(stage.hyperparameters["loss"])  # type: ignore[arg-type]
    assert loss == "dpo_norm"
    tokenizer = load_tokenizer(plan.tokenizer.name)
    path = data / "post-training" / "demo-preferences" / "train.jsonl"
    n = batch * 3  # both sides cycle through these; fewer pairs, less reference to precompute
    pairs = read_preference_file(path, tokenizer, limit=n)
    batches = PreferenceBatches(pairs, batch_size=batch, epochs=1, seq_len=seq, seed=0, pad_id=tokenizer.pad_id,
                                micro_pairs=batch)
    assert not batches.cut

    model = our_model(plan)
    hf = hf_model(plan, model)
    optimizer = our_optimizer(model, stage)
    with torch.no_grad():  # the stage's cached reference log-probs, computed before training (not timed)
        tokens, labels = (torch.from_numpy(a) for a in batches.rows(list(range(len(pairs)))))
        reference = response_logps(model(tokens), labels, loss).view(-1, 2)
    ready = []
    for s in range(batches.steps):
        (tokens_np, labels_np, pairs_np), = batches.batch(s).micro_batches
        ready.append((torch.from_numpy(tokens_np), torch.from_numpy(labels_np), reference[torch.from_numpy(pairs_np)]))

    def ours(i: int) -> float:
        tokens, labels, ref = ready[i % len(ready)]
        policy = response_logps(model(tokens), labels, loss).view(-1, 2)
        losses, _, _ = dpo_losses(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta)
        losses.mean().backward()
        our_update(model, optimizer, stage)
        return float(len(ref))

    records = read_jsonl_records(path, lambda r: r, limit=n)
    config = trl.DPOConfig(**trl_args(stage, work / "dpo", batch), loss_type=["sigmoid_norm"], beta=beta,
                           max_length=seq, precompute_ref_log_probs=True, dataset_num_proc=None)
    trainer = trl.DPOTrainer(model=hf, args=config, train_dataset=datasets.Dataset.from_list(records),
                             processing_class=hf_tokenizer())
    alternate("dpo", "pairs/s", trainer, lambda inputs: float(inputs["input_ids"].shape[0] // 2), ours, rounds,
            f"steps of {batch} demo preference pairs (chosen and rejected: {2 * batch} sequences), "
            f"{loss} beta {beta:g}, reference log-probs precomputed on both sides")


# --- GRPO -------------------------------------------------------------------------------------------------------


def our_rlvr(plan: Plan, weights: dict[str, torch.Tensor], checkpoints: Path) -> tuple[Step, list[float]]:
    """The rlvr stage's own trainer (runtime/rlvr.py) in this process, a group of one, started from `weights`
    (policy and reference) rather than a checkpoint; a step is its train_step: the rollout (KV-cached
    sampling, the verifier), the reference's log-probs and its update epochs. Also returns the list each
    rollout's seconds are appended to."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from olmo2spec.runtime.bundle import RunContext
    from olmo2spec.runtime.distributed import init_distributed
    from olmo2spec.runtime.metrics import StepBuffers
    from olmo2spec.runtime.rlvr import RlvrTrainer

    class FromWeights(RlvrTrainer):
        def restore(self) -> bool:
            self.reference = Transformer(ModelArgs.from_plan(plan))
            self.reference.load_state_dict(weights)
            self.reference.eval().requires_grad_(False)
            set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True))
            return True

    stage = plan.stage("rlvr")
    trainer = FromWeights(RunContext(bundle=checkpoints, plan=plan, stage=stage, run="rlvr",
                                     checkpoint_root=checkpoints), init_distributed(False))
    trainer.restore()
    buffers = StepBuffers(1, trainer.dist.device, trainer.per_example_metrics)
    rollouts: list[float] = []
    rollout = trainer.rollout

    def timed_rollout() -> Any:
        start = time.perf_counter()
        out = rollout()
        rollouts.append(time.perf_counter() - start)
        return out

    trainer.rollout = timed_rollout  # type: ignore[method-assign]

    def step(i: int) -> float:
        trainer.train_step(buffers, 0)
        return float(stage.batch_size)

    return step, rollouts


def bench_grpo(plan: Plan, data: Path, work: Path, rounds: int) -> None:
    import datasets
    import trl

    from olmo2spec.posttrain.verifiers import scorer
    from olmo2spec.runtime.distributed import shutdown
    from olmo2spec.runtime.rlvr import RlvrSettings

    stage = plan.stage("rlvr")
    assert isinstance(stage, PostTrainStagePlan)
    s = RlvrSettings.from_hyperparameters(stage.hyperparameters)
    assert s.algorithm == "grpo" and s.verifiers == ("gsm8k",), s
    batch, group = stage.batch_size, s.samples_per_prompt
    os.environ["DATA_ROOT"] = str(data)  # where the stage reads its prompts
    model = our_model(plan)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hf = hf_model(plan, model)
    ours, rollouts = our_rlvr(plan, weights, work / "checkpoints")

    path = chat_file(data, stage.dataset)
    records = read_jsonl_records(path, lambda r: {"prompt": r["messages"], "answer": str(r["answer"])},
                                 limit=batch // group * (rounds + 1))
    score = scorer("gsm8k")

    def verifier_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [s.verifier_reward * score(t, a) for t, a in zip(texts, answer, strict=True)]

    args = trl_args(stage, work / "grpo", batch)
    args.update(weight_decay=stage.optimizer.weight_decay)
    # a step of ours is one rollout of `batch` episodes and `update_epochs` optimizer steps over all of it:
    # in TRL, generation batches of `batch` completions, each trained on `num_iterations` times, one step each
    config = trl.GRPOConfig(**args, num_generations=group, generation_batch_size=batch, num_iterations=s.update_epochs,
                            max_completion_length=s.response_len, temperature=s.temperature, top_p=1.0, top_k=0,
                            beta=s.kl_beta, epsilon=s.clip_eps, loss_type="dapo", use_vllm=False,
                            log_completions=False, shuffle_dataset=False, model_init_kwargs={"dtype": "float32"})
    export = work / "hf-export"  # TRL loads its reference model from the policy's path: an export on disk
    hf.save_pretrained(export)
    trainer = trl.GRPOTrainer(model=str(export), reward_funcs=[verifier_reward], args=config,
                              train_dataset=datasets.Dataset.from_list(records), processing_class=hf_tokenizer())
    seconds = alternate("grpo", "episodes/s", trainer, lambda inputs: batch / s.update_epochs, ours, rounds,
              f"steps of {batch // group} demo math prompts x {group} samples (up to {s.response_len} tokens, "
              f"temperature {s.temperature:g}), reward {s.verifier_reward:g} x gsm8k verifier, KL beta "
              f"{s.kl_beta:g} to a reference model, {s.update_epochs} optimizer steps per rollout; episodes/s of "
              f"generation and update together (TRL: transformers' generate, no vLLM)",
              trl_steps=s.update_epochs)
    # where the time goes: the generating step against TRL's others (updates only), our rollout
    first = statistics.median(seconds[::s.update_epochs])
    update = statistics.median([x for i, x in enumerate(seconds) if i % s.update_epochs])
    sampling = statistics.median(rollouts[1:])
    print(f"  (TRL: median {first:.2f} s for the step that generates, scores and computes the reference's and the "
          f"old policy's log-probs, {update:.2f} s for an update step; ours: median {sampling:.2f} s for a "
          "rollout's sampling and scoring)")
    shutdown()  # the rlvr trainer's process group of one


# --- main -------------------------------------------------------------------------------------------------------


PARTS = {"sft": bench_sft, "dpo": bench_dpo, "grpo": bench_grpo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds of every part (default: "
                        + ", ".join(f"{k} {v}" for k, v in ROUNDS.items()) + ")")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # e.g. that the rlvr trainer's group of one is not TRL's distributed mode
    plan = check(ROOT / "specs" / "tiny.toml").plan
    m = plan.model
    print(f"threads {torch.get_num_threads()}; tiny model: {m.n_layers} layers, d_model {m.d_model}, fp32; "
          f"AdamW lr {LR:g} constant, clip 1.0")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_demo_corpus(Path(tmp) / "data")
        print(f"  (demo data: {time.perf_counter() - start:.0f} s)")
        for part in parts:
            start = time.perf_counter()
            PARTS[part](plan, Path(tmp) / "data", Path(tmp) / "work", args.rounds or ROUNDS[part])
            print(f"  ({part}: {time.perf_counter() - start:.0f} s with setup)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
