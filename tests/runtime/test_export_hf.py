"""Hugging Face export: a checkpoint becomes an Olmo2ForCausalLM that computes the same logits, offline."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads them: nothing here may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from conftest import ROOT, SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.plan.plan import Plan, to_json  # noqa: E402
from olmo2spec.runtime.checkpoint import COMPLETE, Checkpointer  # noqa: E402
from olmo2spec.runtime.export_hf import ExportError, export_hf, hf_config  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]
MHA = ["model.n_kv_heads=4"]
DOLMA2 = ["tokenizer.name=dolma2", "tokenizer.vocab_size=100278", "tokenizer.embedding_rows=100352",
          "tokenizer.eos_id=100257", "tokenizer.pad_id=100277"]
TOLERANCE = 1e-4
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def make_plan(*overrides: str) -> Plan:
    return check(SPECS / "tiny.toml", [*SMALL, *overrides]).plan


def save_checkpoint(plan: Plan, run_dir: Path, step: int = 7, seed: int = 0) -> Transformer:
    """A randomly initialised model of `plan`, every weight (norms too) perturbed, saved at `step`."""
    torch.manual_seed(seed)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    optimizer = torch.optim.AdamW(model.parameters())
    with warnings.catch_warnings():  # DCP without a process group: "assuming ... a single process"
        warnings.simplefilter("ignore")
        Checkpointer(run_dir, keep_last=3, permanent_every=0).save(step, model, optimizer, {"run": run_dir.name})
    return model.eval()


def load_hf(out: Path, attention: str = "sdpa"):  # type: ignore[no-untyped-def]
    return transformers.Olmo2ForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32,
                                                         attn_implementation=attention).eval()


def max_logit_diff(ours: Transformer, hf, vocab: int, seed: int = 1) -> float:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (3, 48), generator=g)
    with torch.no_grad():
        a, b = ours(tokens), hf(tokens).logits
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):  # type: ignore[no-untyped-def]
    """MHA with the bytes tokenizer and GQA with dolma2, each exported once: name -> (plan, model, out)."""
    root = tmp_path_factory.mktemp("exports")
    result = {}
    for name, overrides in {"mha": MHA, "gqa": DOLMA2}.items():
        plan = make_plan(*overrides)
        model = save_checkpoint(plan, root / name / "run")
        out = export_hf(root / name / "run" / "step-0000007", plan, root / name / "hf")
        result[name] = (plan, model, out)
    return result


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("name", ["mha", "gqa"])
def test_logits_match_transformers(exports, name, attention):  # type: ignore[no-untyped-def]
    plan, model, out = exports[name]
    hf = load_hf(out, attention)
    assert hf.config.num_key_value_heads == (4 if name == "mha" else 2)
    diff = max_logit_diff(model, hf, plan.tokenizer.vocab_size)
    print(f"{name} ({attention} attention): max |logit difference| {diff:.3g}")
    assert diff < TOLERANCE


def test_config_json(exports):  # type: ignore[no-untyped-def]
    plan, _, out = exports["gqa"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "olmo2" and config["architectures"] == ["Olmo2ForCausalLM"]
    assert config["rms_norm_eps"] == 1e-6
    theta = plan.model.rope_theta
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": theta}
    assert config["rope_theta"] == theta
    assert config["vocab_size"] == plan.tokenizer.embedding_rows == 100352
    assert (config["eos_token_id"], config["pad_token_id"]) == (100257, 100277)
    assert config["tie_word_embeddings"] is False
    loaded = transformers.AutoConfig.from_pretrained(out, local_files_only=True)
    assert loaded.rms_norm_eps == 1e-6 and loaded.vocab_size == 100352
    assert loaded.max_position_embeddings == plan.model.max_seq_len
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 100257
    assert hf_config(make_plan("model.rope_theta=10000"))["rope_parameters"]["rope_theta"] == 10000.0
    assert "Olmo2ForCausalLM" in (out / "README.md").read_text()


def test_dolma2_tokenizer_loads_offline_and_matches(exports):  # type: ignore[no-untyped-def]
    from olmo2spec.data.tokenizer import Dolma2Tokenizer

    _, _, out = exports["gqa"]
    hf = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    ours = Dolma2Tokenizer()
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == (100257, 100277, 100257)
    assert len(hf) == 100278
    texts = [
        "Hello world", "The year 1234567 had 89 days and 0.12345 nights.", "  leading and trailing   ",
        "a\n\n\nb\r\n\r\n c \n", "DON'T you'LL it's We'VE", "héllo wörld 日本語のテキスト 🎉🎉 emoji",
        "def f(x):\n    return x**2  # comment\n\n\n", "tabs\tand\t\tmore\t", "   ", "\n", "", "x" * 64,
        "١٢٣٤٥ numbers ۱۲۳ ½", "a<|endoftext|>b<|pad|>c <|im_start|>user", "|||EMAIL_ADDRESS||| <|fim_prefix|>",
    ]
    rng = random.Random(0)
    alphabet = "ab c\n\t 1234'sSé日🎉.,;!?\r-_<|>"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(500)]
    for text in texts:
        ids = ours.encode(text, allow_special=True)
        assert hf.encode(text) == ids, repr(text)
        assert hf.decode(ids) == ours.decode(ids), repr(text)


def test_bytes_export_tokenizer_loads_offline_and_matches(exports):  # type: ignore[no-untyped-def]
    from olmo2spec.data.tokenizer import ByteTokenizer

    _, _, out = exports["mha"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                     "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json"]
    assert (out / "model.safetensors").stat().st_mode == (out / "config.json").stat().st_mode
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())  # a base model
    hf = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    ours = ByteTokenizer()
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id, len(hf)) == (256, 257, 256, 258)
    for text in ["Hello world", "héllo 日本語 🎉", "a<|endoftext|>b<|pad|>c", "  \n\t ", "", "<|user|>\nhi"]:
        ids = ours.encode(text, allow_special=True)
        assert hf.encode(text) == ids, repr(text)
        assert hf.decode(ids) == ours.decode(ids), repr(text)


@pytest.mark.parametrize("overrides", [[], DOLMA2], ids=["bytes", "dolma2"])
def test_a_post_trained_model_carries_the_chat_template_it_was_trained_in(tmp_path: Path, overrides: list[str]):
    from olmo2spec.data.chat import encode_chat
    from olmo2spec.data.tokenizer import load_tokenizer

    plan = make_plan(*overrides)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Checkpointer(tmp_path / "sft", keep_last=1, permanent_every=0).save(
            3, model, torch.optim.AdamW(model.parameters()), {"stage": "sft", "run": "sft"}, final=True)
    out = export_hf(tmp_path / "sft", plan, tmp_path / "hf")
    hf = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
                {"role": "assistant", "content": "2 + 3 = 5."}, {"role": "user", "content": "And 4 and 4?"},
                {"role": "assistant", "content": "8."}]
    got = hf.apply_chat_template(messages, tokenize=True)
    got = list(got if isinstance(got, list) else got["input_ids"])
    assert got == encode_chat(load_tokenizer(plan.tokenizer.name), messages).ids.tolist()
    assert "Chat template" in (out / "README.md").read_text()


def test_bfloat16_export(tmp_path):  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    plan = make_plan(*MHA)
    model = save_checkpoint(plan, tmp_path / "run")
    out = export_hf(tmp_path / "run", plan, tmp_path / "hf", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    assert max_logit_diff(model, load_hf(out), plan.tokenizer.vocab_size) < TOLERANCE
    with pytest.raises(ExportError, match="unknown dtype"):
        export_hf(tmp_path / "run", plan, tmp_path / "hf16", dtype="float16")


def test_sharded_export_loads(tmp_path):  # type: ignore[no-untyped-def]
    plan = make_plan(*MHA)
    model = save_checkpoint(plan, tmp_path / "run")
    out = export_hf(tmp_path / "run", plan, tmp_path / "hf", max_shard_bytes=60_000)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards) and len(index["weight_map"]) == 25
    assert max_logit_diff(model, load_hf(out), plan.tokenizer.vocab_size) < TOLERANCE


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.norm=pre"], 'norm = "pre"'),
    (["model.qk_norm=false"], "qk_norm = false"),
])
def test_refuses_what_olmo2_cannot_represent(tmp_path, overrides, message):  # type: ignore[no-untyped-def]
    plan = make_plan(*MHA, *overrides)
    save_checkpoint(plan, tmp_path / "run")
    with pytest.raises(ExportError, match=message):
        export_hf(tmp_path / "run", plan, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.n_kv_heads=2"], r"weight 'layers\.0\.self_attn\.k_proj\.weight' has shape \[64, 64\], "
                             r"the plan's model expects \[32, 64\]"),
    (["model.n_layers=3"], r"checkpoint has no weight 'layers\.2\.self_attn\.q_proj\.weight'"),
    (["model.n_layers=1"], r"checkpoint has a weight the plan's model does not: 'layers\.1\."),
    (["tokenizer.embedding_rows=512"], r"'embed_tokens\.weight' has shape \[384, 64\].*\[512, 64\]"),
])
def test_weights_that_do_not_match_the_plan(tmp_path, overrides, message):  # type: ignore[no-untyped-def]
    save_checkpoint(make_plan(*MHA), tmp_path / "run")
    with pytest.raises(ExportError, match=message):
        export_hf(tmp_path / "run", make_plan(*MHA, *overrides), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary directory left behind


def test_checkpoint_resolution(tmp_path):  # type: ignore[no-untyped-def]
    plan = make_plan(*MHA)
    run = tmp_path / "run"
    with pytest.raises(ExportError, match="does not exist"):
        export_hf(run, plan, tmp_path / "hf")
    run.mkdir()
    with pytest.raises(ExportError, match=r"run has no complete checkpoint in \S+/run: run its stage first"):
        export_hf(run, plan, tmp_path / "hf")
    save_checkpoint(plan, run, step=5, seed=1)
    newest = save_checkpoint(plan, run, step=9, seed=2)
    out = export_hf(run, plan, tmp_path / "hf")  # a run directory: its newest complete step
    assert max_logit_diff(newest, load_hf(out), plan.tokenizer.vocab_size) < TOLERANCE
    assert "step 9" in (out / "README.md").read_text()
    (run / "step-0000009" / COMPLETE).unlink()
    with pytest.raises(ExportError, match="incomplete"):
        export_hf(run / "step-0000009", plan, tmp_path / "hf")
    assert "step 9" in (out / "README.md").read_text()  # a failed export leaves the earlier one alone


def test_replaces_an_export_but_nothing_else(tmp_path):  # type: ignore[no-untyped-def]
    plan = make_plan(*MHA)
    save_checkpoint(plan, tmp_path / "run", step=5)
    first = export_hf(tmp_path / "run", plan, tmp_path / "hf")
    (first / "stale.txt").write_text("from an earlier export")
    save_checkpoint(plan, tmp_path / "run", step=6)
    again = export_hf(tmp_path / "run", plan, tmp_path / "hf")
    assert again == first and not (again / "stale.txt").exists() and "step 6" in (again / "README.md").read_text()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a Hugging Face OLMo 2 export"):
        export_hf(tmp_path / "run", plan, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "precious", "run"]


def test_cli_end_to_end(tmp_path, capsys):  # type: ignore[no-untyped-def]
    from olmo2spec.cli import main

    bundle = tmp_path / "bundle"
    overrides = [arg for o in [*SMALL, *MHA] for arg in ("--set", o)]
    assert main(["build", str(SPECS / "tiny.toml"), "-o", str(bundle), *overrides]) == 0
    plan = make_plan(*MHA)
    assert (bundle / "plan.json").read_text() == to_json(plan)
    run = bundle / "checkpoints" / "pretrain"  # the default CHECKPOINT_ROOT layout: plan.json is found above
    model = save_checkpoint(plan, run, step=3)
    (run / "step-0000004").mkdir()  # a save killed midway: skipped
    result = subprocess.run([sys.executable, "-m", "olmo2spec.cli", "export-hf", str(run), str(run / "hf")],
                            cwd=ROOT, env=OFFLINE_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "step-0000003" in result.stdout and "Traceback" not in result.stderr
    assert max_logit_diff(model, load_hf(run / "hf"), plan.tokenizer.vocab_size) < TOLERANCE

    def cli(*args: str) -> tuple[int, str]:  # the same entry point, in process: no second torch import
        capsys.readouterr()
        code = main(["export-hf", *args])
        return code, capsys.readouterr().err

    elsewhere = tmp_path / "elsewhere"
    (run / "step-0000003").rename(elsewhere)
    code, err = cli(str(elsewhere), str(tmp_path / "out"))  # no plan.json above it
    assert code == 2 and "--bundle" in err
    code, err = cli(str(elsewhere), str(tmp_path / "out"), "--bundle", str(bundle), "--dtype", "bfloat16")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    code, err = cli(str(run), str(tmp_path / "out2"))  # only the incomplete step is left
    assert code == ExitCode.CHECKPOINT and "no complete checkpoint" in err and "Traceback" not in err
    code, err = cli(str(elsewhere), str(tmp_path / "out3"), "--bundle", str(tmp_path))
    assert code == 2 and "plan.json not found" in err
