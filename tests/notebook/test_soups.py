"""The soup comparer, driven from Python: listing, souping (equal to the soup stage), the table, refusals, the cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import attrs
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ipywidgets")

from conftest import SPECS  # noqa: E402

import olmo2spec.runtime.evaluate as evaluate  # noqa: E402
from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.emit.bundle import build_bundle  # noqa: E402
from olmo2spec.notebook.soup_ingredients import find_ingredients  # noqa: E402
from olmo2spec.notebook.soup_make import SOUPS, make_soup  # noqa: E402
from olmo2spec.notebook.soups import SoupComparer  # noqa: E402
from olmo2spec.plan.plan import Plan  # noqa: E402
from olmo2spec.runtime.bundle import load_run  # noqa: E402
from olmo2spec.runtime.checkpoint import COMPLETE, Checkpointer, load_model_weights, read_marker, step_dir  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.soup import run_soup_stage  # noqa: E402

ANNEALS = ["anneal-seed42", "anneal-seed42069", "anneal-seed666"]
SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96",
         "stages.anneal.seeds=[42, 42069, 666]"]  # three ingredients, as 7B soups (tiny has two)

pytestmark = [pytest.mark.filterwarnings("ignore:.*torch.distributed is disabled:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Plan]:
    """The tiny recipe with a smaller model and soup weights 2:1:1, as a bundle (the soup stage's) and its plan."""
    checked = check(SPECS / "tiny.toml", [*SMALL, "stages.soup.weights=[2, 1, 1]"])
    bundle = tmp_path_factory.mktemp("soups") / "bundle"
    build_bundle(checked, bundle, "tiny.toml")
    return bundle, checked.plan


def train_like(root: Path, run: str, stage: str, plan: Plan, seed: int, *, step: int = 12, final: bool = True,
               mlp_hidden: int | None = None) -> Path:
    """A step as the trainer saves it (model, optimizer, the plan it carries, the stage in its marker)."""
    args = ModelArgs.from_plan(plan)
    if mlp_hidden is not None:
        args = attrs.evolve(args, mlp_hidden=mlp_hidden)
    torch.manual_seed(seed)
    model = Transformer(args)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Checkpointer(root / run, keep_last=2, permanent_every=0, plan=plan).save(
            step, model, torch.optim.AdamW(model.parameters()), {"stage": stage, "run": run}, final=final)
    return step_dir(root / run, step)


def eval_data(root: Path) -> Path:
    """The demo suite's eval files, two items each."""
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "heldout-text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"source": "web", "text": "The cat sat on the mat."}, {"source": "code", "text": "def f(x):\n    return x"}]))
    for split in ("dev", "heldout"):
        (root / "eval" / f"math-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
            {"id": f"{split}-1", "question": "What is 2 plus 3?", "answer": "5", "kind": "arithmetic"},
            {"id": f"{split}-2", "question": "Add 4 and 4.", "answer": "8", "kind": "arithmetic"}]))
    return root


@pytest.fixture
def anneals(small: tuple[Path, Plan], tmp_path: Path) -> Path:
    """A checkpoint root with the tiny recipe's three anneal runs, finished, and its pretraining run."""
    _, plan = small
    root = tmp_path / "checkpoints"
    train_like(root, "pretrain", "pretrain", plan, seed=9, step=40)
    for i, run in enumerate(ANNEALS):
        train_like(root, run, "anneal", plan, seed=i)
    eval_data(tmp_path / "data")
    return root


def comparer(root: Path, small: tuple[Path, Plan]) -> SoupComparer:
    return SoupComparer(root, root.parent / "data", small[0], limit=2)


def test_listing_finds_finished_anneal_runs_only(small: tuple[Path, Plan], tmp_path: Path) -> None:
    _, plan = small
    root = tmp_path / "checkpoints"
    train_like(root, "pretrain", "pretrain", plan, seed=9)
    train_like(root, "microanneal-code", "microanneal", plan, seed=8)
    train_like(root, ANNEALS[0], "anneal", plan, seed=0)
    train_like(root, ANNEALS[1], "anneal", plan, seed=1, step=4, final=False)
    listing = find_ingredients(root)
    assert [(i.run, i.stage, i.step) for i in listing.ingredients] == [(ANNEALS[0], "anneal", 12)]
    assert listing.unfinished == [f"{ANNEALS[1]}: not finished (its newest checkpoint, step 4, is not final)"]
    widget = SoupComparer(root, tmp_path / "data", tmp_path / "no-bundle")
    assert [r.use.description for r in widget.rows] == [ANNEALS[0]]
    assert "left out: anneal-seed42069: not finished" in widget.children[2].value

    empty = SoupComparer(tmp_path / "nothing", tmp_path / "data", tmp_path / "no-bundle")
    assert "no anneal runs under" in empty.children[0].value and empty.button.disabled


def test_weights_are_normalised_or_refused_as_the_checker_does(anneals: Path, small: tuple[Path, Plan]) -> None:
    widget = comparer(anneals, small)
    widget.rows[0].weight.value = 2.0
    assert [r.share.value for r in widget.rows] == ["<b>50.0%</b>", "<b>25.0%</b>", "<b>25.0%</b>"]
    widget.rows[2].use.value = False
    assert [r.share.value for r in widget.rows] == ["<b>66.7%</b>", "<b>33.3%</b>", ""]
    for row in widget.rows:
        row.weight.value = 0.0
    assert "error[E036]: weights: weights sum to 0" in widget.status.value
    assert widget.soup() is None and not (anneals / SOUPS).exists()


def test_soup_equals_the_soup_stage_and_is_compared_with_its_ingredients(
        anneals: Path, small: tuple[Path, Plan], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, _ = small
    widget = comparer(anneals, small)
    widget.rows[0].weight.value = 2.0
    widget.name.value = "mine"
    assert widget.start() is not None
    widget.wait()  # in a thread, as the button does
    made = widget.made
    assert made is not None and made.step == anneals / SOUPS / "mine" / "step-0000000", widget.status.value
    assert read_marker(made.step)["final"] and (made.step / COMPLETE).is_file()
    assert json.loads((made.hf / "config.json").read_text())["model_type"] == "olmo2"  # type: ignore[union-attr]

    frame = widget.frame
    assert frame["model"].to_list() == [*ANNEALS, "mine"]
    assert frame["role"].to_list() == ["ingredient"] * 3 + ["soup"]
    assert frame["weight %"].to_list() == [50.0, 25.0, 25.0, None]
    assert {"loss code", "loss web", "math dev %", "math held-out %"} <= set(frame.columns)
    assert "mine and its ingredients" in widget.table.value and "anneal-seed666" in widget.table.value
    assert len(widget.chart.data) == 8  # 4 models x 2 panels

    # the soup stage, on the same checkpoints with the same weights (declared in the recipe), writes the same
    monkeypatch.setenv("CHECKPOINT_ROOT", str(anneals))
    monkeypatch.delenv("RANK", raising=False)
    ctx = load_run(bundle, "soup", None)
    assert ctx.stage.weights == [0.5, 0.25, 0.25]  # type: ignore[attr-defined]  # normalised by the compiler
    assert run_soup_stage(ctx) == 0
    ours, stage = load_model_weights(made.step), load_model_weights(anneals / "soup" / "step-0000000")
    assert ours.keys() == stage.keys() and all(torch.equal(ours[k], stage[k]) for k in ours)
    safetensors = pytest.importorskip("safetensors.torch")
    hf_ours = safetensors.load_file(str(made.hf / "model.safetensors"))  # type: ignore[operator]
    hf_stage = safetensors.load_file(str(anneals / "soup" / "hf" / "model.safetensors"))
    assert all(torch.equal(hf_ours[k], hf_stage[k]) for k in hf_stage)

    # reopened: the soup is found again and nothing is evaluated again
    def no_eval(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("evaluated again")

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", no_eval)
    again = comparer(anneals, small)
    again.rows[0].weight.value = 2.0
    again.name.value = "mine"
    assert (made_again := again.soup()) is not None and made_again.reused, again.status.value
    assert again.frame.equals(frame)
    assert [name for _, name in again.earlier.options] == [None, "mine"]
    again.earlier.value = "mine"  # a soup made before, compared from the cache
    again.wait()
    assert "compared with its 3 ingredients" in again.status.value

    again.rows[0].weight.value = 1.0  # the same name, other weights: refused, naming why
    assert again.soup() is None
    assert "was made from other checkpoints or weights: remove" in again.status.value


def test_incompatible_ingredients_show_the_soups_refusal(anneals: Path, small: tuple[Path, Plan]) -> None:
    _, plan = small
    train_like(anneals, ANNEALS[2], "anneal", plan, seed=2, step=20, mlp_hidden=128)
    widget = comparer(anneals, small)
    assert widget.soup() is None
    assert ("ingredient anneal-seed666 (" in widget.status.value and "differs from anneal-seed42: key "
            "layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64]" in widget.status.value)
    assert "Traceback" not in widget.status.value and widget.progress.value == 0
    assert not list((anneals / SOUPS).glob("*/step-*/COMPLETE"))


def test_an_ingredient_retrained_to_the_same_step_is_not_the_old_soup(anneals: Path, small: tuple[Path, Plan]
                                                                       ) -> None:
    """make_soup keys the soup on its ingredients' COMPLETE markers: the default name changes with them, and a
    named soup of the old checkpoints is refused rather than reused."""
    _, plan = small
    first = make_soup(anneals, find_ingredients(anneals).ingredients, [1, 1, 1])
    named = make_soup(anneals, find_ingredients(anneals).ingredients, [1, 1, 1], name="mine")
    assert not first.reused and not named.reused
    assert make_soup(anneals, find_ingredients(anneals).ingredients, [1, 1, 1]).reused  # unchanged: found again

    train_like(anneals, ANNEALS[2], "anneal", plan, seed=7)  # the same run and step (12), other weights
    again = make_soup(anneals, find_ingredients(anneals).ingredients, [1, 1, 1])
    assert not again.reused and again.name != first.name
    assert not all(torch.equal(a, b) for a, b in zip(load_model_weights(again.step).values(),
                                                     load_model_weights(first.step).values(), strict=True))
    from olmo2spec.notebook.soup_make import SoupRefused

    with pytest.raises(SoupRefused, match="was made from other checkpoints or weights: remove"):
        make_soup(anneals, find_ingredients(anneals).ingredients, [1, 1, 1], name="mine")


def test_make_soup_refuses_a_bad_name(anneals: Path) -> None:
    from olmo2spec.notebook.soup_make import SoupRefused

    with pytest.raises(SoupRefused, match="use letters, digits"):
        make_soup(anneals, find_ingredients(anneals).ingredients, [1, 1, 1], name="../elsewhere")
