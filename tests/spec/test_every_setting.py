"""No spec setting is silently ignored: every field of every spec class is honoured, rejected or documentary.

The walk enumerates the attrs classes of the recipe (a field added later is covered without touching this
file) and sets each field of specs/tiny.toml to another value. Then one of these must hold:
- rejected: the checker refuses the value with E026 (a setting the runtime does not implement);
- honoured: something a run uses changes. What counts depends on where the value goes:
  - a model field: the model the runtime builds from the plan (parameter shapes, initial weights, logits);
    the plan's derived numbers do not count, they are what made `model.bias` look honoured;
  - any other field: plan.json less the tables it copies verbatim from the recipe (derived numbers, stage
    plans), the bundle's scripts (README and MANIFEST excluded: words for people), the optimizer the runtime
    builds; or, for a field copied verbatim, the runtime, data or template sources reading it by name;
- checked: a value the checker refuses where the recipe's own passes (a limit such as max_repeats);
- documentary: listed in DOCUMENTARY with the reason.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_type_hints

import attrs
import pytest

from olmo2spec.compiler import Checked, check
from olmo2spec.emit.bundle import render_bundle
from olmo2spec.kinds import spec_classes
from olmo2spec.plan.plan import to_dict
from olmo2spec.spec.cluster import ClusterSpec
from olmo2spec.spec.diagnostics import SpecError
from olmo2spec.spec.fields import one_of
from olmo2spec.spec.model import ModelSpec
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.schedules import SCHEDULES
from olmo2spec.spec.structure import toml_key
from olmo2spec.spec.supported import TOKENIZER_IDS

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the models are tiny: more threads only wait for each other on a busy machine

from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.optim import build_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.toml"
STAGE_OF_KIND = {"prepare": "prepare", "pretrain": "pretrain", "microanneal": "microanneal", "anneal": "anneal",
                 "soup": "soup", "eval": "eval-base", "sft": "sft", "dpo": "dpo", "reward": "reward", "rlvr": "rlvr",
                 "export": "export"}
MIX_OF_FIELD = {"description": "demo-pretrain", "source_pct": "demo-pretrain", "mix_pct": "demo-anneal",
                "tokens": "demo-anneal", "allow_repeats": "demo-anneal"}
"""tiny's demo-pretrain is given by source %, demo-anneal by mix %: each field is tried on the mix that uses it."""
SCHEDULE_STAGE = {"cosine": ((), "pretrain"), "linear": ((), "sft"),
                  "wsd": (('stages.pretrain.lr={schedule="wsd", peak=3e-3, warmup_steps=20}',), "pretrain"),
                  "constant": (('stages.pretrain.lr={schedule="constant", value=3e-3}',), "pretrain")}
"""Where each schedule kind is tried: tiny writes cosine and linear; wsd and constant replace pretrain's."""

DOCUMENTARY = {
    "recipe.description": "free text for people: the bundle's README and explain show it",
    "stages.*.description": "free text for people: explain shows it",
    "sources.*.description": "free text for people",
    "mixes.*.description": "free text for people: explain shows it",
}
"""Fields that change nothing a run does, on purpose."""

ALTERNATIVE: dict[str, Any] = {
    # values tiny accepts, where the automatic choice (twice the number, the other flag, the next choice, the
    # name with -2) is not a valid recipe
    "model.n_kv_heads": 2, "model.dropout": 0.1,
    "tokenizer.name": "dolma2", "tokenizer.vocab_size": 300, "tokenizer.eos_id": 1, "tokenizer.pad_id": 2,
    "cluster.gpu": "h100-80gb", "cluster.env": {"NCCL_DEBUG": "INFO"}, "cluster.slurm.time_limit": "1-00:00:00",
    "cluster.slurm.extra": ["--constraint=h100"], "cluster.slurm.signal_seconds": 900,
    "cluster.slurm.partition": "gpu", "cluster.slurm.account": "olmo", "cluster.slurm.qos": "high",
    "cluster.rdzv_port": 29600, "cluster.mfu": 0.6, "cluster.nodes": 2, "cluster.gpus_per_node": 1,
    "data.root": "/data", "optimizer.betas": [0.8, 0.99],
    "runtime.wandb_project": "olmo2", "runtime.metrics_sinks": ["tensorboard"],
    "recipe.seed": 7,
    "sources.*.category": "academic", "sources.*.paths": ["${DATA_ROOT}/tokens/web2/*.npy"],
    "sources.*.raw": ["${DATA_ROOT}/raw/web2/*.jsonl.gz"], "sources.*.group": "prose",
    "sources.*.tokens": "2.5M", "sources.*.description": "other",
    "mixes.demo-pretrain.source_pct": {"demo-web": 50, "demo-code": 100, "demo-math": 100},
    "mixes.demo-anneal.mix_pct": {"demo-web": 30, "demo-math": 70}, "mixes.demo-anneal.tokens": "1.2M",
    "mixes.*.description": "other",
    "stages.*.description": "other", "stages.*.nodes": 2, "stages.*.micro_batch": 4, "stages.*.shard_gpus": 1,
    "stages.*.activation_checkpointing": "full", "stages.*.fsdp_units": "block", "stages.*.seed": 9,
    "stages.prepare.from": "prepare-2", "stages.pretrain.from": "prepare-2", "stages.microanneal.from": "anneal",
    "stages.anneal.from": "microanneal", "stages.soup.from": "pretrain", "stages.sft.from": "pretrain",
    "stages.dpo.from": "soup", "stages.reward.from": "dpo", "stages.rlvr.from": "sft",
    "stages.eval-base.from": "pretrain", "stages.export.from": "dpo",
    "stages.prepare.sources": ["demo-web"], "stages.prepare.text_field": "body",
    "stages.prepare.filters": ["repeated_ngrams"],
    "stages.pretrain.mix": "other", "stages.pretrain.tokens": "1.6M", "stages.pretrain.steps": 100,
    "stages.pretrain.seq_len": 128, "stages.pretrain.batch_size": 32, "stages.pretrain.data_seed": 9,
    "stages.microanneal.candidates": [["demo-math"]], "stages.microanneal.general": "demo-code",
    "stages.microanneal.tokens": "100K", "stages.microanneal.seq_len": 128, "stages.microanneal.batch_size": 32,
    "stages.microanneal.candidate_share": 0.25,
    "stages.anneal.mix": "demo-pretrain", "stages.anneal.tokens": "0.5M", "stages.anneal.steps": 100,
    "stages.anneal.seeds": [1, 2],
    "stages.anneal.micro_batch": 1, "stages.anneal.seq_len": 128, "stages.anneal.batch_size": 32,
    "stages.soup.ingredients": ["anneal", "microanneal"], "stages.soup.weights": [0.25, 0.75],
    "stages.eval-base.suite": "olmes-base", "stages.eval-base.tasks": ["gsm8k::olmes"],
    "stages.sft.dataset": "other", "stages.dpo.dataset": "other", "stages.rlvr.dataset": "other",
    "stages.reward.dataset": "other",
    "stages.sft.batch_size": 32, "stages.dpo.batch_size": 32, "stages.rlvr.batch_size": 16,
    "stages.reward.batch_size": 32,
    "stages.sft.max_seq_len": 128, "stages.dpo.max_seq_len": 128, "stages.rlvr.max_seq_len": 160,
    "stages.reward.max_seq_len": 128, "stages.rlvr.value_from": "reward",
    "stages.rlvr.verifiers": ["math"], "stages.rlvr.algorithm": "ppo",
    "stages.*.lr.linear.start": 2e-3, "stages.*.lr.linear.end": 1e-5, "stages.*.lr.linear.warmup_steps": 3,
    "stages.*.lr.cosine.final": 0.2, "stages.*.lr.cosine.horizon": "4M",
    # a stage's optimizer keys are unset (None) unless the stage gives them
    "stages.*.optimizer.betas": [0.8, 0.99], "stages.*.optimizer.eps": 1e-6, "stages.*.optimizer.weight_decay": 0.05,
    "stages.*.optimizer.decay_embeddings": True, "stages.rlvr.optimizer.decay_embeddings": False,
    "stages.*.optimizer.decay_norms": False, "stages.*.optimizer.grad_clip": 0.5, "stages.*.optimizer.z_loss": 1e-4,
    "stages.*.ngram_masking": False,  # unset (None) unless the stage gives it: tiny masks as [data] says
}
"""The value tried for a field, where the automatic one is not a valid recipe."""

SETUP: dict[str, tuple[str, ...]] = {
    # overrides on both sides, where the value tried needs them
    "stages.pretrain.mix": ("mixes.other.source_pct={demo-web = 100, demo-code = 100, demo-math = 90}",),
    "stages.microanneal.general": ('stages.microanneal.candidates=[["demo-math"]]',),
    "cluster.nodes": ("stages.pretrain.micro_batch=4",), "stages.pretrain.nodes": ("stages.pretrain.micro_batch=4",),
}
CHANGED_WITH: dict[str, tuple[str, ...]] = {
    "tokenizer.name": ("tokenizer.vocab_size=100278", "tokenizer.embedding_rows=100352", "tokenizer.eos_id=100257",
                       "tokenizer.pad_id=100277"),
    # a renamed stage takes the references to it along
    "stages.prepare.name": ('stages.pretrain.from="prepare-2"',),
    "stages.pretrain.name": ('stages.microanneal.from="pretrain-2"', 'stages.anneal.from="pretrain-2"'),
    "stages.anneal.name": ('stages.soup.ingredients=["anneal-2"]',),
    "stages.soup.name": ('stages.eval-base.from="soup-2"', 'stages.sft.from="soup-2"'),
    "stages.sft.name": ('stages.dpo.from="sft-2"', 'stages.reward.from="sft-2"'),
    "stages.dpo.name": ('stages.rlvr.from="dpo-2"',),
    "stages.rlvr.name": ('stages.eval-instruct.from="rlvr-2"', 'stages.export.from="rlvr-2"'),
    "stages.rlvr.algorithm": ('stages.rlvr.value_from="reward"',),  # PPO's value function starts from it
    "stages.rlvr.value_from": ('stages.rlvr.algorithm="ppo"',),  # GRPO has none
}
SECOND_PREPARE = ('[[stages]]\nname = "prepare"', '[[stages]]\nname = "prepare-2"\nkind = "prepare"\n\n'
                  '[[stages]]\nname = "prepare"')
EDITED: dict[str, tuple[str, str]] = {
    # (old, new) text of tiny.toml, where --set cannot write the recipe's side: it adds fields, never removes one
    "stages.prepare.from": SECOND_PREPARE,
    "stages.pretrain.from": SECOND_PREPARE,
    "stages.pretrain.steps": ('tokens = "2.4M"', "steps = 150"),
    "stages.anneal.steps": ('tokens = "1M"\nbatch_size = 4', "steps = 60\nbatch_size = 4"),
}

CHECKED: dict[str, tuple[tuple[str, ...], Any]] = {
    # limits: (overrides, value) such that the recipe's own value and `value` differ in validity
    "stages.microanneal.max_repeats": ((), 0.01),
    "stages.pretrain.repeat_mix": (('stages.pretrain.tokens="6M"', 'stages.pretrain.lr.horizon="12M"'), True),
    "stages.anneal.repeat_mix": (('stages.anneal.tokens="5M"',), True),
    "mixes.demo-anneal.allow_repeats": (('mixes.demo-anneal.tokens="2M"',), ["demo-math"]),
}

VERBATIM = ("recipe", "tokenizer", "optimizer", "data", "checkpoint", "runtime", "sources")
"""plan.json tables that copy the recipe's as they are (the model and cluster tables copy their spec fields)."""
PEOPLE = ("README.md", "MANIFEST.json", "plan.json")
"""Bundle files that are not scripts (plan.json is compared less its verbatim copies)."""
READERS = [ROOT / "olmo2spec" / "runtime", ROOT / "olmo2spec" / "data", ROOT / "olmo2spec" / "emit" / "templates"]


@attrs.frozen
class Case:
    key: str
    """The dotted key `--set` writes, e.g. stages.sft.lr.start."""
    pattern: str
    """The key with stage, source and mix names as * and a schedule's kind: stages.*.lr.linear.start."""
    section: str
    """The recipe's top-level table: model, stages, ..."""
    field: str
    current: Any
    validator: Any
    setup: tuple[str, ...] = ()
    """Overrides applied on both sides of the comparison."""


def _walk(cls: type, key: str, pattern: str, section: str, value: Any, setup: tuple[str, ...]) -> Iterator[Case]:
    hints = get_type_hints(cls)
    for a in attrs.fields(cls):
        name, hint = toml_key(a), hints[a.name]
        if name in ("kind", "schedule") or (name == "lr" and section == "stages"):
            continue  # the class itself, or a schedule: each is walked on its own
        if attrs.has(hint):
            yield from _walk(hint, f"{key}.{name}", f"{pattern}.{name}", section, getattr(value, a.name), setup)
        else:
            yield Case(f"{key}.{name}", f"{pattern}.{name}", section, name, getattr(value, a.name), a.validator,
                       setup)


def _cases() -> list[Case]:
    recipe = _checked(()).recipe
    cases: list[Case] = []
    for a in attrs.fields(Recipe):
        hint = get_type_hints(Recipe)[a.name]
        if attrs.has(hint):
            cases += _walk(hint, a.name, a.name, a.name, getattr(recipe, a.name), ())
    web = recipe.sources["demo-web"]
    cases += _walk(type(web), "sources.demo-web", "sources.*", "sources", web, ())
    mixes = get_args(get_type_hints(Recipe)["mixes"])[1]
    for a in attrs.fields(mixes):
        mix = MIX_OF_FIELD[toml_key(a)]
        cases += [c for c in _walk(mixes, f"mixes.{mix}", "mixes.*", "mixes", recipe.mixes[mix], ())
                  if c.field == toml_key(a)]
    stages = {s.name: s for s in recipe.stages}
    for kind, cls in spec_classes().items():
        name = STAGE_OF_KIND[kind]
        cases += _walk(cls, f"stages.{name}", "stages.*", "stages", stages[name], ())
    for schedule, (setup, name) in SCHEDULE_STAGE.items():
        stage = next(s for s in _checked(setup).recipe.stages if s.name == name)
        assert isinstance(stage.lr, SCHEDULES[schedule])
        cases += _walk(SCHEDULES[schedule], f"stages.{name}.lr", f"stages.*.lr.{schedule}", "stages", stage.lr,
                       setup)
    return cases


@cache
def _checked(overrides: tuple[str, ...], edit: tuple[str, str] | None = None) -> Checked:
    return check(_recipe(edit), list(overrides))


@cache
def _recipe(edit: tuple[str, str] | None) -> Path:
    """tiny.toml, or a copy with `edit` made (old text, new text) beside it in a temporary directory."""
    if edit is None:
        return TINY
    text = TINY.read_text()
    assert text.count(edit[0]) == 1, f"{edit[0]!r} is not once in tiny.toml"
    directory = Path(tempfile.mkdtemp(prefix="every-setting-"))
    base = os.path.relpath(TINY.parent / "base", directory)  # recipes name files relative to themselves
    text = text.replace(edit[0], edit[1]).replace('extends = "base/', f'extends = "{base}/')
    path = directory / f"edit-{len(_EDITS)}.toml"
    _EDITS.append(path)
    path.write_text(text)
    return path


_EDITS: list[Path] = []


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + "}"
    return repr(value)


def _choices(validator: Any) -> tuple[Any, ...]:
    """The choices of a one_of validator (or of each(one_of(...))), else ()."""
    if validator is None or getattr(validator, "__closure__", None) is None:
        return ()
    closed = inspect.getclosurevars(validator).nonlocals
    if validator.__code__ is one_of(()).__code__:
        return tuple(closed["choices"])
    return _choices(closed.get("check"))


def _alternative(case: Case, current: Any) -> Any:
    for key in (case.key, case.pattern, f"stages.*.{case.field}"):
        if key in ALTERNATIVE:
            return ALTERNATIVE[key]
    choices = _choices(case.validator)
    if choices:
        if isinstance(current, list):
            return [c for c in choices if c not in current] or current[:1]
        return next(c for c in choices if c != current)
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return current * 2 if current else 1
    if isinstance(current, float):
        return current / 2 if current else 0.1
    if case.field == "name":
        return f"{current}-2"
    raise AssertionError(f"{case.key} = {current!r}: no other value to try; add one to ALTERNATIVE")


def _seen(probe: Any, checked: Checked) -> str:
    """probe(checked), once per checked recipe (the unchanged recipe is compared with every case)."""
    key = (probe.__name__, id(checked))
    if key not in _SEEN:
        _SEEN[key] = probe(checked)
    return _SEEN[key]


_SEEN: dict[tuple[str, int], str] = {}


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _model_seen(checked: Checked) -> str:
    """What the runtime builds from the plan: parameter and buffer shapes, initial weights, logits."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(checked.plan))
    model.init_weights()
    tokens = torch.arange(24).reshape(2, 12) % checked.plan.tokenizer.vocab_size
    with torch.no_grad():
        logits = model(tokens)
    state = [(k, tuple(v.shape), v.double().sum().item()) for k, v in model.state_dict().items()]
    buffers = [(k, tuple(v.shape)) for k, v in model.named_buffers()]
    return _digest(state, buffers, logits.double().sum().item(), logits.abs().double().sum().item())


def _optimizer_seen(checked: Checked) -> str:
    optimizer = build_optimizer(_tiny_model(), checked.plan.optimizer)
    return _digest([({k: v for k, v in g.items() if k != "params"}, len(g["params"])) for g in optimizer.param_groups])


@cache
def _tiny_model() -> Any:
    """tiny's model, for the optimizer probe: only the optimizer's settings differ between the two sides."""
    return Transformer(ModelArgs.from_plan(_checked(()).plan))


def _plan_seen(checked: Checked) -> str:
    """plan.json less its verbatim copies of the recipe's tables."""
    plan = to_dict(checked.plan)
    for section in VERBATIM:
        plan.pop(section)
    for a in attrs.fields(ModelSpec):
        plan["model"].pop(a.name)
    for a in attrs.fields(ClusterSpec):
        if a.name != "env":  # the plan's env is the recipe's merged over the bundle's defaults
            plan["cluster"].pop(a.name)
    return _digest(plan)


def _scripts_seen(checked: Checked) -> str:
    files = render_bundle(checked, "tiny.toml")
    return _digest(sorted((k, v) for k, v in files.items() if k not in PEOPLE))


@cache
def _reader_sources() -> str:
    return "\n".join(p.read_text() for d in READERS for p in sorted(d.rglob("*")) if p.suffix in (".py", ".j2"))


def _read_by_name(case: Case) -> bool:
    """A verbatim-copied field that the runtime, the data code or a template reads by name."""
    generic = case.field in ("name", "root", "tokens", "description")
    found = re.search(rf"\.{case.section}\.{case.field}\b", _reader_sources())
    return bool(found or (not generic and re.search(rf"\.{case.field}\b", _reader_sources())))


def _fails(overrides: tuple[str, ...], edit: tuple[str, str] | None = None) -> bool:
    try:
        _checked(overrides, edit)
    except SpecError:
        return True
    return False


def _verdict(case: Case) -> str:
    """'rejected', 'honoured: <by what>', 'checked' or 'ignored'."""
    setup, edit = case.setup + SETUP.get(case.key, ()), EDITED.get(case.key)
    if case.key in CHECKED:
        overrides, value = CHECKED[case.key]
        own = _fails((*setup, *overrides), edit)
        other = _fails((*setup, *overrides, f"{case.key}={_toml(value)}"), edit)
        return "checked" if own != other else "ignored"
    if len(_choices(case.validator)) == 1:
        return "rejected"  # the only value the spec accepts: another is refused as it is read
    base = _checked(setup, edit)
    current = _current(case, base)
    value = _alternative(case, current)
    assert value != current, f"{case.key}: the value tried is the recipe's own"
    try:
        changed = _checked((*setup, *CHANGED_WITH.get(case.key, ()), f"{case.key}={_toml(value)}"), edit)
    except SpecError as exc:
        errors = [d for d in exc.diagnostics if d.severity.value == "error"]
        if errors and all(d.code == "E026" for d in errors):
            return "rejected"
        raise AssertionError(f"{case.key}={_toml(value)} is not a valid tiny recipe; pick a value in ALTERNATIVE: "
                             + "; ".join(d.render() for d in errors)) from None
    probes = {"model": _model_seen} if case.section == "model" else {
        "plan": _plan_seen, "scripts": _scripts_seen, "optimizer": _optimizer_seen}
    for name, probe in probes.items():  # the first difference is proof enough
        if _seen(probe, base) != _seen(probe, changed):
            return f"honoured: {name}"
    if case.section in (*VERBATIM, "cluster") and _read_by_name(case):
        return "honoured: read by name"
    return "ignored"


def _current(case: Case, checked: Checked) -> Any:
    """The field's value in the recipe compared against (an edited recipe's own where there is one)."""
    if case.key not in EDITED:
        return case.current
    stage = next(s for s in checked.recipe.stages if s.name == case.key.split(".")[1])
    return getattr(stage, "from_" if case.field == "from" else case.field)


CASES = _cases()


def test_the_walk_covers_every_class_and_a_field_of_each() -> None:
    keys = {c.key for c in CASES}
    assert {"model.dropout", "model.bias", "model.init_scaling", "tokenizer.add_bos", "cluster.slurm.qos",
            "checkpoint.async_save", "runtime.spike_sigmas", "data.instance_filter_warn_share",
            "optimizer.decay_norms", "sources.demo-web.raw", "mixes.demo-anneal.allow_repeats",
            "stages.rlvr.gae_lambda", "stages.export.format", "stages.pretrain.lr.horizon",
            "stages.pretrain.lr.decay_fraction", "stages.pretrain.lr.value", "stages.sft.lr.warmup_ratio",
            "stages.eval-base.tasks", "stages.soup.weights", "stages.prepare.filters"} <= keys
    assert len(CASES) > 150


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_every_setting_is_honoured_rejected_or_documentary(case: Case) -> None:
    if case.pattern in DOCUMENTARY:
        return
    verdict = _verdict(case)
    assert verdict != "ignored", (f"{case.key}: another value changes nothing the runtime uses; honour it, reject "
                                  "it with E026 in spec/supported.py, or list it in DOCUMENTARY with the reason")


def summary() -> Counter[str]:
    """Verdicts by kind: PYTHONPATH=.:tests/spec python3 -c 'import test_every_setting as t; print(t.summary())'."""
    return Counter("documentary" if c.pattern in DOCUMENTARY else _verdict(c).split(":")[0] for c in CASES)


def test_documentary_entries_name_fields_that_exist() -> None:
    assert set(DOCUMENTARY) <= {c.pattern for c in CASES}


def test_a_refused_setting_says_where_why_and_what_to_write() -> None:
    with pytest.raises(SpecError) as caught:
        check(TINY, ["model.bias=true"])
    (error,) = [d for d in caught.value.diagnostics if d.severity.value == "error"]
    text = error.render()
    assert error.code == "E026" and text.startswith("--set:1:")
    assert "model.bias = true is not supported by the runtime: OLMo 2 has no biases" in text
    assert "write bias = false" in text


@pytest.mark.parametrize("name", sorted(TOKENIZER_IDS))
def test_the_tokenizer_ids_the_checker_requires_are_the_tokenizers_own(name: str) -> None:
    from olmo2spec.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(name)
    assert TOKENIZER_IDS[name] == (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id)
