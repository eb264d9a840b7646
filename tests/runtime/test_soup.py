"""Model souping: the streamed weighted average of final checkpoints, its checks, and the soup stage."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.distributed.checkpoint as dcp  # noqa: E402
from conftest import SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.emit.bundle import build_bundle  # noqa: E402
from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.runtime import checkpoint as ckpt  # noqa: E402
from olmo2spec.runtime.bundle import load_run  # noqa: E402
from olmo2spec.runtime.checkpoint import (  # noqa: E402
    CHECKSUMS,
    COMPLETE,
    Checkpointer,
    CheckpointError,
    load_model_weights,
    read_marker,
    verify,
)
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.soup import (  # noqa: E402
    SoupError,
    has_optimizer_state,
    run_soup_stage,
    soup,
)

ARGS = ModelArgs(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, mlp_hidden=48, vocab_rows=64, max_seq_len=16)
ANNEALS = ["anneal-seed42", "anneal-seed42069", "anneal-seed666"]
SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96",
         "stages.anneal.seeds=[42, 42069, 666]"]  # three ingredients, as 7B soups (tiny has two)

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.distributed is disabled:UserWarning")


def make_model(args: ModelArgs, seed: int) -> Transformer:
    """A random model whose every weight (norms included) differs from seed to seed."""
    torch.manual_seed(seed)
    model = Transformer(args)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def save(run_dir: Path, seed: int, args: ModelArgs = ARGS, *, step: int = 5, final: bool = True
         ) -> dict[str, torch.Tensor]:
    """A final checkpoint (model and optimizer, as a training run writes it); returns its weights."""
    model = make_model(args, seed)
    optimizer = torch.optim.AdamW(model.parameters())
    with warnings.catch_warnings():  # DCP without a process group: "assuming ... a single process"
        warnings.simplefilter("ignore")
        Checkpointer(run_dir, keep_last=2, permanent_every=0).save(step, model, optimizer, {"run": run_dir.name},
                                                                    final=final)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_raw(path: Path, model: dict[str, object]) -> Path:
    """A DCP checkpoint of exactly `model` (keys dropped, added, retyped), marked final."""
    path.mkdir(parents=True)
    dcp.save({"model": model}, checkpoint_id=str(path), no_dist=True)
    (path / COMPLETE).write_text(json.dumps({"step": 5, "final": True}))
    return path


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_weighted_mean(ours: dict[str, torch.Tensor], sds: list[dict[str, torch.Tensor]],
                         weights: list[float]) -> None:
    """`ours` is the weighted mean to fp32 rounding: off the exact value by at most n u sum(w |x|), u = 2^-24
    (the bound of n rounded products and sums; in practice a fraction of it)."""
    assert ours.keys() == sds[0].keys()
    u = 2.0**-24
    for k in ours:
        exact = sum(w * sd[k].double() for sd, w in zip(sds, weights, strict=True))
        scale = sum(w * sd[k].double().abs() for sd, w in zip(sds, weights, strict=True))
        error = (ours[k].double() - exact).abs()
        assert ours[k].dtype == torch.float32
        assert bool((error <= len(sds) * u * scale).all()), f"{k}: error {float(error.max()):.3g}"


@pytest.fixture
def ingredients(tmp_path):  # type: ignore[no-untyped-def]
    """Four final checkpoints of ARGS: (step dirs, weights)."""
    dirs, sds = [], []
    for i in range(4):
        sds.append(save(tmp_path / f"anneal-{i}", seed=i))
        dirs.append(ckpt.step_dir(tmp_path / f"anneal-{i}", 5))
    return dirs, sds


@pytest.mark.parametrize("n", [2, 3, 4])
def test_uniform_soup_is_the_mean(ingredients, tmp_path, n):  # type: ignore[no-untyped-def]
    dirs, sds = ingredients
    weights = [1 / n] * n
    report = soup(dirs[:n], weights, tmp_path / "soup" / "step-0000000", meta={"stage": "soup"})
    ours = load_model_weights(report.out)
    assert_weighted_mean(ours, sds[:n], weights)
    direct = {k: torch.stack([sd[k] for sd in sds[:n]]).mean(0) for k in sds[0]}  # torch's fp32 mean
    assert max_diff(ours, direct) <= 2**-23  # at most one ulp of 1.0 (the norm weights) apart
    if n == 2:  # (a + b) / 2 and a / 2 + b / 2 round once, to the same float
        assert max_diff(ours, direct) == 0.0
    assert report.tensors == len(sds[0]) and report.names == [f"anneal-{i}" for i in range(n)]
    assert report.bytes == sum(v.numel() * 4 for v in sds[0].values())


def test_weighted_soup(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, sds = ingredients
    weights = [0.5, 0.3, 0.15, 0.05]
    out = soup(dirs, weights, tmp_path / "soup" / "step-0000000", meta={}).out
    assert_weighted_mean(load_model_weights(out), sds, weights)
    one = soup(dirs, [0.0, 1.0, 0.0, 0.0], tmp_path / "one" / "step-0000000", meta={}).out
    assert max_diff(load_model_weights(one), sds[1]) == 0.0


def test_soup_is_a_final_model_only_checkpoint(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, sds = ingredients
    out = soup(dirs[:2], [0.5, 0.5], tmp_path / "soup" / "step-0000000", meta={"stage": "soup", "x": 1}).out
    marker = read_marker(out)
    assert len(marker.pop("checksums")) == 64  # the sha256 of its CHECKSUMS.json: a soup is verified like any step
    assert marker == {"stage": "soup", "x": 1, "step": 0, "final": True, "optimizer": False}
    verify(out)
    keys = dcp.FileSystemReader(str(out)).read_metadata().state_dict_metadata
    assert all(k.startswith("model.") for k in keys)
    assert not has_optimizer_state(out) and has_optimizer_state(dirs[0])
    assert ckpt.latest_complete(tmp_path / "soup") == out  # what the stage after the soup finds

    fresh = make_model(ARGS, seed=99)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Checkpointer(tmp_path / "next", keep_last=1, permanent_every=0).load(out, fresh, None)["final"]
    assert_weighted_mean(fresh.state_dict(), sds[:2], [0.5, 0.5])
    # with an optimizer DCP fails ("Missing key ... optim.state..."), which the load reports as a CheckpointError.
    # The marker's "optimizer": false (has_optimizer_state) lets a caller refuse first with a clearer message.
    with warnings.catch_warnings(), pytest.raises(CheckpointError, match="Missing key in checkpoint state_dict: optim"):
        warnings.simplefilter("ignore")
        Checkpointer(tmp_path / "next", keep_last=1, permanent_every=0).load(
            out, fresh, torch.optim.AdamW(fresh.parameters()))


def test_other_shape_is_refused(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, _ = ingredients
    save(tmp_path / "anneal-seed666", seed=7, args=attrs_evolve(ARGS, mlp_hidden=64))
    odd = ckpt.step_dir(tmp_path / "anneal-seed666", 5)
    out = tmp_path / "soup" / "step-0000000"
    with pytest.raises(SoupError) as err:
        soup([dirs[0], dirs[1], odd], [0.4, 0.3, 0.3], out, meta={})
    assert str(err.value) == (f"ingredient anneal-seed666 ({odd}) differs from anneal-0: key "
                              "layers.0.mlp.gate_proj.weight has shape [64, 32], expected [48, 32]")
    assert not out.exists()  # refused before anything is written


def attrs_evolve(args: ModelArgs, **changes: int) -> ModelArgs:
    import attrs

    return attrs.evolve(args, **changes)


def test_missing_extra_and_retyped_keys_are_refused(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, sds = ingredients
    out = tmp_path / "soup" / "step-0000000"
    missing = save_raw(tmp_path / "missing" / "step-0000005",
                       {k: v for k, v in sds[1].items() if k != "layers.1.self_attn.k_norm.weight"})
    with pytest.raises(SoupError, match=r"ingredient missing \(.*\) differs from anneal-0: key "
                                        r"layers\.1\.self_attn\.k_norm\.weight is missing \(shape \[32\], dtype "
                                        r"float32 expected\)"):
        soup([dirs[0], missing], [0.5, 0.5], out, meta={})
    extra = save_raw(tmp_path / "extra" / "step-0000005", {**sds[1], "bonus.weight": torch.zeros(3)})
    with pytest.raises(SoupError, match=r"differs from anneal-0: it has an extra key bonus\.weight \(shape \[3\]"):
        soup([dirs[0], extra], [0.5, 0.5], out, meta={})
    retyped = save_raw(tmp_path / "bf16" / "step-0000005", {k: v.bfloat16() for k, v in sds[1].items()})
    with pytest.raises(SoupError, match=r"key embed_tokens\.weight has dtype bfloat16, expected float32"):
        soup([dirs[0], retyped], [0.5, 0.5], out, meta={})
    with pytest.raises(SoupError, match=r"is not a checkpoint \(no \.metadata\): it does not exist"):
        soup([dirs[0], tmp_path / "nowhere" / "step-0000005"], [0.5, 0.5], out, meta={})
    assert not out.exists()


def test_unreadable_ingredient_is_refused(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, _ = ingredients
    broken = tmp_path / "broken" / "step-0000005"
    shutil.copytree(dirs[1], broken)
    data = broken / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 10])  # truncated in the model: metadata agrees
    with pytest.raises(SoupError, match=rf"ingredient broken: checkpoint {broken}: __0_0.distcp has [\d,]+ bytes"):
        soup([dirs[0], broken], [0.5, 0.5], tmp_path / "soup" / "step-0000000", meta={})
    # a step saved before checksums: the sizes its .metadata gives
    (broken / CHECKSUMS).unlink()
    (broken / COMPLETE).write_text(json.dumps({"step": 5, "final": True}))
    with pytest.raises(SoupError, match=r"ingredient broken: .*__0_0.distcp has [\d,]+ bytes, its .metadata needs"):
        soup([dirs[0], broken], [0.5, 0.5], tmp_path / "soup" / "step-0000000", meta={})
    assert not (tmp_path / "soup" / "step-0000000" / COMPLETE).exists()


def test_bad_weights_are_refused(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, _ = ingredients
    out = tmp_path / "soup" / "step-0000000"
    for weights, message in [([0.5, 0.4], "must sum to 1"), ([1.0], "1 weights for 2 ingredients"),
                             ([1.5, -0.5], "non-negative"), ([float("nan"), 1.0], "finite")]:
        with pytest.raises(SoupError, match=message):
            soup(dirs[:2], weights, out, meta={})


def test_bf16_ingredients_and_non_tensor_entries(tmp_path):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(8, 4, generator=g).bfloat16() for _ in range(2))
    first = save_raw(tmp_path / "a" / "step-0000001", {"w": a, "note": "from a"})
    second = save_raw(tmp_path / "b" / "step-0000001", {"w": b, "note": "from b"})
    out = soup([first, second], [0.25, 0.75], tmp_path / "soup" / "step-0000000", meta={}).out
    got = load_model_weights(out)
    assert got["w"].dtype == torch.bfloat16
    assert torch.equal(got["w"], (0.25 * a.float() + 0.75 * b.float()).bfloat16())
    assert got["note"] == "from a"  # not averageable: the first ingredient's


def test_output_directory_handling(ingredients, tmp_path):  # type: ignore[no-untyped-def]
    dirs, _ = ingredients
    out = tmp_path / "soup" / "step-0000000"
    out.mkdir(parents=True)  # what a soup killed while saving leaves: no COMPLETE
    (out / "__0_0.distcp").write_bytes(b"half")
    (out / CHECKSUMS).write_text("{}")  # killed between its checksums and its marker
    soup(dirs[:2], [0.5, 0.5], out, meta={})
    assert read_marker(out)["final"] and (out / "__0_0.distcp").stat().st_size > 4
    with pytest.raises(SoupError, match="already a complete checkpoint"):
        soup(dirs[:2], [0.5, 0.5], out, meta={})
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SoupError, match="not an unfinished soup"):
        soup(dirs[:2], [0.5, 0.5], foreign, meta={})
    assert (foreign / "notes.txt").read_text() == "keep me"


# --- the stage -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("soup-bundle")
    checked = check(SPECS / "tiny.toml", SMALL)
    build_bundle(checked, root / "bundle", "tiny.toml")
    return root / "bundle", checked.plan


def stage_context(bundle: Path, checkpoints: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CHECKPOINT_ROOT", str(checkpoints))
    monkeypatch.delenv("RANK", raising=False)
    return load_run(bundle, "soup", None)


def test_soup_stage_end_to_end(tiny_bundle, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    bundle, plan = tiny_bundle
    assert plan.stage("soup").ingredients == ANNEALS
    args = ModelArgs.from_plan(plan)
    sds = [save(tmp_path / run, seed=i, args=args, step=12) for i, run in enumerate(ANNEALS)]
    ctx = stage_context(bundle, tmp_path, monkeypatch)

    assert run_soup_stage(ctx) == 0
    text = capsys.readouterr().out
    assert "soup of 3 ingredients" in text and "anneal-seed666" in text and "peak RSS" in text
    out = tmp_path / "soup" / "step-0000000"
    marker = read_marker(out)
    assert marker["final"] and marker["kind"] == "soup" and marker["optimizer"] is False
    assert [i["run"] for i in marker["ingredients"]] == ANNEALS and {i["step"] for i in marker["ingredients"]} == {12}
    assert_weighted_mean(load_model_weights(out), sds, [1 / 3] * 3)

    hf = tmp_path / "soup" / "hf"
    assert json.loads((hf / "config.json").read_text())["model_type"] == "olmo2"
    safetensors = pytest.importorskip("safetensors.torch")
    exported = safetensors.load_file(str(hf / "model.safetensors"))
    assert torch.equal(exported["model.layers.1.mlp.up_proj.weight"],
                       load_model_weights(out)["layers.1.mlp.up_proj.weight"])
    assert torch.equal(exported["lm_head.weight"], load_model_weights(out)["lm_head.weight"])

    assert run_soup_stage(ctx) == 0  # resumable: neither the soup nor its export is made again
    text = capsys.readouterr().out
    assert "already done" in text and "export already in" in text

    sds[2] = save(tmp_path / ANNEALS[2], seed=7, args=args, step=20)  # an ingredient run redone: soup again
    assert run_soup_stage(ctx) == 0
    assert "souping again" in capsys.readouterr().out
    assert read_marker(out)["ingredients"][2]["step"] == 20
    assert_weighted_mean(load_model_weights(out), sds, [1 / 3] * 3)
    exported = safetensors.load_file(str(hf / "model.safetensors"))
    assert torch.equal(exported["lm_head.weight"], load_model_weights(out)["lm_head.weight"])


def test_an_ingredient_retrained_to_the_same_step_is_souped_again(tiny_bundle, tmp_path, monkeypatch, capsys
                                                                   ):  # type: ignore[no-untyped-def]
    """Same run, same step number, other weights: the soup is keyed on the ingredients' COMPLETE markers, not on
    their paths and steps, so the old soup (and its export) is not reused."""
    bundle, plan = tiny_bundle
    args = ModelArgs.from_plan(plan)
    sds = [save(tmp_path / run, seed=i, args=args, step=12) for i, run in enumerate(ANNEALS)]
    ctx = stage_context(bundle, tmp_path, monkeypatch)
    assert run_soup_stage(ctx) == 0
    capsys.readouterr()

    shutil.rmtree(tmp_path / ANNEALS[1])  # the run trained again from scratch, to the same step
    sds[1] = save(tmp_path / ANNEALS[1], seed=7, args=args, step=12)
    assert run_soup_stage(ctx) == 0
    assert "was made from other checkpoints or weights: souping again" in capsys.readouterr().out
    out = tmp_path / "soup" / "step-0000000"
    assert_weighted_mean(load_model_weights(out), sds, [1 / 3] * 3)
    safetensors = pytest.importorskip("safetensors.torch")
    exported = safetensors.load_file(str(tmp_path / "soup" / "hf" / "model.safetensors"))
    assert torch.equal(exported["lm_head.weight"], load_model_weights(out)["lm_head.weight"])

    assert run_soup_stage(ctx) == 0  # and unchanged ingredients still find it done
    assert "already done" in capsys.readouterr().out


def test_soup_stage_refuses_bad_ingredients(tiny_bundle, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    bundle, plan = tiny_bundle
    args = ModelArgs.from_plan(plan)
    ctx = stage_context(bundle, tmp_path, monkeypatch)
    save(tmp_path / ANNEALS[0], seed=0, args=args)
    save(tmp_path / ANNEALS[1], seed=1, args=args)
    assert run_soup_stage(ctx) == ExitCode.CHECKPOINT
    assert f"ingredient anneal-seed666 has no complete checkpoint in {tmp_path / 'anneal-seed666'}" in \
        capsys.readouterr().err

    save(tmp_path / ANNEALS[2], seed=2, args=args, final=False)
    assert run_soup_stage(ctx) == ExitCode.CHECKPOINT
    assert "ingredient anneal-seed666 has not finished" in capsys.readouterr().err

    save(tmp_path / ANNEALS[2], seed=2, args=attrs_evolve(args, mlp_hidden=128), step=9)
    assert run_soup_stage(ctx) == ExitCode.CHECKPOINT
    assert ("differs from anneal-seed42: key layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64]"
            in capsys.readouterr().err)

    for i, run in enumerate(ANNEALS):  # all alike, but not the plan's model
        save(tmp_path / run, seed=i, args=attrs_evolve(args, mlp_hidden=128), step=20)
    assert run_soup_stage(ctx) == ExitCode.CHECKPOINT
    assert "ingredient anneal-seed42: weight 'layers.0.mlp.gate_proj.weight' has shape [128, 64], the plan's " \
           "model expects [96, 64]" in capsys.readouterr().err
    assert not (tmp_path / "soup").exists()


def test_a_soup_naming_runs_averages_exactly_those(tmp_path_factory, tmp_path, monkeypatch, capsys
                                                  ):  # type: ignore[no-untyped-def]
    """`ingredients = ["anneal@seed:42", "anneal@seed:666"]`: two of the three runs, the third never read (it
    need not even exist), each with its own weight."""
    root = tmp_path_factory.mktemp("soup-selected")
    checked = check(SPECS / "tiny.toml", [*SMALL, 'stages.soup.ingredients=["anneal@seed:666", "anneal@seed:42"]',
                                          "stages.soup.weights=[3, 1]"])
    build_bundle(checked, root / "bundle", "tiny.toml")
    assert checked.plan.stage("soup").ingredients == ["anneal-seed666", "anneal-seed42"]
    args = ModelArgs.from_plan(checked.plan)
    runs = ["anneal-seed666", "anneal-seed42"]
    sds = [save(tmp_path / run, seed=i, args=args, step=12) for i, run in enumerate(runs)]
    ctx = stage_context(root / "bundle", tmp_path, monkeypatch)

    assert run_soup_stage(ctx) == 0
    assert "soup of 2 ingredients" in capsys.readouterr().out
    out = tmp_path / "soup" / "step-0000000"
    assert [i["run"] for i in read_marker(out)["ingredients"]] == ["anneal-seed666", "anneal-seed42"]
    assert_weighted_mean(load_model_weights(out), sds, [0.75, 0.25])
