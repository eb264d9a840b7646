"""Export a checkpoint as a Hugging Face `Olmo2ForCausalLM` directory (safetensors, config, tokenizer).

The model's parameter names are HF's minus the `model.` prefix, so the export is a key-by-key copy:
every key is checked against the shapes the plan implies, then written as safetensors (sharded
with an index above `MAX_SHARD_BYTES`). The export also gets a `tokenizer.json`, for dolma2 built
from the local cl100k_base ranks (no download), for the byte tokenizer a byte-level one without
merges: transformers loads it offline as a fast tokenizer that gives olmo2spec's ids. A model of a
post-training stage (sft, dpo, rlvr) also gets the chat template it was trained in
(`olmo2spec.data.chat.TULU_TEMPLATE`) in tokenizer_config.json.

The export is atomic: written into a temporary sibling directory, then renamed into place. An
existing directory is replaced only when it is itself an export (its config.json says olmo2).

transformers is not needed to export (only to load the result); `tokenizers` is, for dolma2 (without
it a bytes model is exported without tokenizer files).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from olmo2spec.data.chat import TULU_TEMPLATE
from olmo2spec.kinds import stage_kind
from olmo2spec.plan.plan import Plan
from olmo2spec.runtime.checkpoint import (
    CheckpointError,
    check_fits,
    load_model_weights,
    plan_of,
    read_marker,
    resolve_step,
    strip_wrappers,
)
from olmo2spec.runtime.model import ModelArgs

__all__ = ["ExportError", "MAX_SHARD_BYTES", "DTYPES", "HF_SPLIT_PATTERN", "model_args", "hf_config",
           "dolma2_tokenizer_json", "bytes_tokenizer_json", "export_hf", "find_bundle"]

MAX_SHARD_BYTES = 5 * 10**9
"""Above this many bytes of weights the safetensors file is sharded (Hugging Face's default: 5 GB)."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}

HF_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""cl100k's split pattern as the `tokenizers` library (Oniguruma) reads it, as in the released OLMo 2
tokenizer.json. tiktoken's pinned `CL100K_PAT_STR` cannot be used as is: Oniguruma reads its
`\\p{N}{1,3}+` as "runs of 1-3 digits, repeated" instead of a possessive 1-3, so numbers would split
differently. This older spelling splits text exactly as tiktoken does (tests check it)."""

class ExportError(Exception):
    """The checkpoint cannot be exported: none complete, damaged files, weights that do not match the plan or are
    not finite, a model Hugging Face's Olmo2 cannot represent, or an output path that is not an export."""


def model_args(plan: Plan) -> ModelArgs:
    """The model of `plan` (embedding and head with `tokenizer.embedding_rows` rows)."""
    return ModelArgs.from_plan(plan)


def _check_representable(plan: Plan) -> None:
    m = plan.model
    problems = []
    if m.norm != "reordered":
        problems.append(f'norm = "{m.norm}" (Olmo2 normalises sublayer outputs: norm = "reordered")')
    if not m.qk_norm:
        problems.append("qk_norm = false (Olmo2 always applies QK-norm)")
    if m.bias:
        problems.append("bias = true (Olmo2 has no biases)")
    if m.d_model % m.n_heads or m.n_heads % m.n_kv_heads:
        problems.append(f"d_model {m.d_model}, n_heads {m.n_heads}, n_kv_heads {m.n_kv_heads} do not divide")
    if problems:
        raise ExportError("Hugging Face's Olmo2ForCausalLM cannot represent this model: " + "; ".join(problems))


def hf_config(plan: Plan, dtype: str = "float32") -> dict[str, Any]:
    """The `config.json` of the export: a transformers `Olmo2Config` as a dict.

    Raises:
        ExportError: for a model Olmo2 cannot represent (pre-norm, no QK-norm, biases) or an unknown dtype.
    """
    _check_representable(plan)
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}: choose {' or '.join(DTYPES)}")
    m, tok = plan.model, plan.tokenizer
    return {
        "architectures": ["Olmo2ForCausalLM"],
        "model_type": "olmo2",
        "hidden_size": m.d_model,
        "intermediate_size": m.mlp_hidden,
        "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.n_kv_heads,
        "head_dim": m.d_model // m.n_heads,
        "max_position_embeddings": m.max_seq_len,
        "rms_norm_eps": m.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},  # transformers >= 5
        "rope_theta": m.rope_theta,  # transformers 4
        "rope_scaling": None,
        "vocab_size": tok.embedding_rows,  # the matrices' rows, padding included
        "bos_token_id": tok.eos_id,  # the tokenizer's bos is <|endoftext|>, as in the released OLMo 2
        "eos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": m.init_std,
        "use_cache": True,
        "dtype": dtype,  # transformers >= 5
        "torch_dtype": dtype,  # transformers 4
    }


def _hf_name(name: str) -> str:
    """A bare model parameter's name in Hugging Face's Olmo2ForCausalLM."""
    return name if name == "lm_head.weight" else f"model.{name}"


def _hf_weights(path: Path, weights: dict[str, torch.Tensor], plan: Plan, dtype: torch.dtype
                ) -> dict[str, torch.Tensor]:
    """Check against the plan, rename to HF's keys, convert; raises ExportError naming the first mismatch."""
    bare: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        bare[strip_wrappers(key)] = value
    try:
        check_fits(path, plan, bare)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    for name, value in bare.items():
        if not bool(torch.isfinite(value).all()):  # a diverged run, or damage no checksum covered
            raise ExportError(f"weight {name!r} is not finite (NaN or inf): refusing to export "
                              "it; check the run's loss, or export an earlier checkpoint")
    return {_hf_name(name): value.detach().to("cpu", dtype).contiguous() for name, value in bare.items()}


def _write_safetensors(tensors: dict[str, torch.Tensor], out: Path, max_shard_bytes: int) -> list[str]:
    from safetensors.torch import save_file

    meta = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total <= max_shard_bytes:
        save_file(tensors, str(out / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for file, shard in zip(files, shards, strict=True):
        save_file(shard, str(out / file), metadata=meta)
        weight_map |= dict.fromkeys(shard, file)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_json(out / "model.safetensors.index.json", index)
    return [*files, "model.safetensors.index.json"]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- tokenizer --------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what byte-level BPE vocabularies are written in)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def dolma2_tokenizer_json(add_bos: bool = False) -> str:
    """dolma2 as a `tokenizer.json` for the `tokenizers` library, built from the local cl100k ranks.

    The BPE merges are recovered from the ranks (every split of a token into two tokens, ordered by
    the merged token's rank) and `ignore_merges` makes a whole-word match win, as tiktoken does.
    """
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
        from tokenizers.models import BPE
    except ImportError:
        raise ExportError("writing the dolma2 tokenizer needs the `tokenizers` package: "
                          "pip install 'olmo2spec[hf]'") from None
    from olmo2spec.data.tokenizer import DOLMA2_SPECIAL_TOKENS, _cl100k_path, _read_cl100k_ranks

    ranks = _read_cl100k_ranks(_cl100k_path())
    to_unicode = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_unicode[x] for x in b)

    vocab = {text(token): rank for token, rank in ranks.items()}
    triples: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                triples.append((rank, ranks[left], ranks[right], left, right))
    triples.sort(key=lambda t: t[:3])
    merges = [(text(left), text(right)) for _, _, _, left, right in triples]

    tokenizer = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HF_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)
    if add_bos:
        bos = "<|endoftext|>"
        tokenizer.post_processor = processors.Sequence([byte_level, processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, DOLMA2_SPECIAL_TOKENS[bos])])])
    else:
        tokenizer.post_processor = byte_level
    specials = sorted(DOLMA2_SPECIAL_TOKENS, key=DOLMA2_SPECIAL_TOKENS.__getitem__)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    for special, expected in DOLMA2_SPECIAL_TOKENS.items():
        got = tokenizer.token_to_id(special)
        if got != expected:  # ids follow on from the ranks; guard the assumption
            raise ExportError(f"dolma2 tokenizer.json: {special} got id {got}, not {expected}")
    return str(tokenizer.to_str())


def bytes_tokenizer_json() -> str:
    """The byte tokenizer (`olmo2spec.data.tokenizer.ByteTokenizer`) as a `tokenizer.json`: each UTF-8 byte its
    own id (a byte-level BPE without merges), `<|endoftext|>` 256 and `<|pad|>` 257."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
        from tokenizers.models import BPE
    except ImportError:
        raise ExportError("writing the byte tokenizer needs the `tokenizers` package: "
                          "pip install 'olmo2spec[hf]'") from None
    to_unicode = _bytes_to_unicode()
    tokenizer = Tokenizer(BPE({to_unicode[b]: b for b in range(256)}, [], fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<|endoftext|>", "<|pad|>")])
    return str(tokenizer.to_str())


def _write_tokenizer(plan: Plan, out: Path, chat: bool) -> list[str]:
    """tokenizer.json, tokenizer_config.json (with the chat template for a chat model) and special_tokens_map.json."""
    tok = plan.tokenizer
    if tok.name == "dolma2":
        text = dolma2_tokenizer_json(tok.add_bos)
    else:
        try:
            text = bytes_tokenizer_json()
        except ExportError:  # without `tokenizers` a bytes model still exports, as before, without the files
            return []
    out.joinpath("tokenizer.json").write_text(text, encoding="utf-8")
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>",
               "unk_token": "<|endoftext|>"}
    _write_json(out / "tokenizer_config.json", {
        # the generic fast tokenizer: reads tokenizer.json as is (GPT2Tokenizer would rebuild its pre-tokenizer)
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": tok.add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": plan.model.max_seq_len,
        **({"chat_template": TULU_TEMPLATE} if chat else {}),
    })
    _write_json(out / "special_tokens_map.json", special)
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


# --- export -----------------------------------------------------------------------------------------------------


def _readme(plan: Plan, checkpoint: Path, marker: dict[str, Any], dtype: str, files: list[str], chat: bool) -> str:
    m, tok = plan.model, plan.tokenizer
    step = marker.get("step", "?")
    if tok.name == "dolma2":
        tokenizer = ("Tokenizer: dolma2 (cl100k_base + OLMo 2's special tokens), `tokenizer.json` built from the "
                     "local cl100k ranks; `AutoTokenizer.from_pretrained(\"<this dir>\")` gives olmo2spec's ids.")
    elif "tokenizer.json" in files:
        tokenizer = (f"Tokenizer: `{tok.name}`: token ids are UTF-8 bytes 0-255, eos {tok.eos_id}, pad {tok.pad_id}, "
                     "written as a byte-level `tokenizer.json` without merges; "
                     "`AutoTokenizer.from_pretrained(\"<this dir>\")` gives olmo2spec's ids.")
    else:
        tokenizer = (f"Tokenizer: `{tok.name}`: no tokenizer files (they need the `tokenizers` package). Token ids "
                     f"are UTF-8 bytes 0-255, eos {tok.eos_id}, pad {tok.pad_id}: encode with "
                     f"`list(text.encode('utf-8'))` or `olmo2spec.data.tokenizer.load_tokenizer('{tok.name}')`.")
    if chat and "tokenizer.json" in files:
        tokenizer += (" Chat template: the Tulu template OLMo 2 Instruct uses (`<|endoftext|><|user|>\\n...\\n"
                      "<|assistant|>\\n...<|endoftext|>`), in tokenizer_config.json: `apply_chat_template` gives the "
                      "ids this model was finetuned on.")
    lines = [
        f"# {plan.recipe.name}: Hugging Face export",
        "",
        f"Exported by olmo2spec {plan.olmo2spec_version} from `{checkpoint}` (step {step}) as `Olmo2ForCausalLM`, "
        f"{dtype} weights.",
        "",
        f"- {m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads ({m.n_kv_heads} key/value), MLP "
        f"{m.mlp_hidden}, RoPE theta {m.rope_theta:g}, RMSNorm eps {m.norm_eps:g}, context {m.max_seq_len}",
        f"- vocabulary {tok.vocab_size} ids, embedding and output head padded to {tok.embedding_rows} rows "
        f"(`vocab_size` in config.json)",
        f"- {tokenizer}",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        'model = AutoModelForCausalLM.from_pretrained("<this dir>")',
        "```",
        "",
        "Files: " + ", ".join(f"`{f}`" for f in sorted(files)),
        "",
    ]
    return "\n".join(lines)


def _chat_model(plan: Plan, marker: dict[str, Any]) -> bool:
    """Whether the step was made by a stage whose models are prompted in the chat template (sft, dpo, rlvr)."""
    try:
        return stage_kind(plan.stage(str(marker.get("stage"))).kind).chat_model
    except KeyError:  # a step that does not name its stage (a soup, an older step): a base model
        return False


def _is_export(path: Path) -> bool:
    try:
        return bool(json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type") == "olmo2")
    except (OSError, ValueError, AttributeError):
        return False


def export_hf(checkpoint_dir: Path, plan: Plan | None, out: Path, dtype: str = "float32", *,
              max_shard_bytes: int = MAX_SHARD_BYTES,
              load: Callable[[Path], dict[str, torch.Tensor]] = load_model_weights) -> Path:
    """Write the Hugging Face export of a checkpoint of `plan`'s model to `out`; returns `out`.

    Args:
        checkpoint_dir: a step directory, or a run directory (its newest complete step is exported).
        plan: the plan the checkpoint was trained under (shapes, config and tokenizer come from it); None: the
            plan the step carries.
        out: the export directory; replaced if it is an earlier export, refused if it is anything else.
        dtype: "float32" or "bfloat16".

    Raises:
        ExportError: see the class.
    """
    out = Path(os.path.abspath(out))
    try:
        checkpoint = resolve_step(Path(checkpoint_dir), final=False)
        plan = plan_of(checkpoint, plan)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    config = hf_config(plan, dtype)
    if out.exists() and not _is_export(out) and (not out.is_dir() or any(out.iterdir())):  # empty dirs may go
        raise ExportError(f"{out} exists and is not a Hugging Face OLMo 2 export: refusing to replace it")
    try:
        marker = read_marker(checkpoint)
        weights = load(checkpoint)  # verified against the step's checksums
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    tensors = _hf_weights(checkpoint, weights, plan, DTYPES[dtype])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files = _write_safetensors(tensors, tmp, max_shard_bytes)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", {
            "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"]})
        files += ["config.json", "generation_config.json", "README.md"]
        chat = _chat_model(plan, marker)
        files += _write_tokenizer(plan, tmp, chat)
        (tmp / "README.md").write_text(_readme(plan, checkpoint, marker, dtype, files, chat), encoding="utf-8")
        mode = (tmp / "README.md").stat().st_mode & 0o777  # safetensors writes 0600; give weights the umask's mode
        for shard in tmp.glob("*.safetensors"):
            shard.chmod(mode)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def find_bundle(checkpoint: Path, levels: int = 4) -> Path | None:
    """The bundle above a checkpoint in the default layout (`<bundle>/checkpoints/<run>/step-N`), if any."""
    path = Path(os.path.abspath(checkpoint))
    for parent in [path, *path.parents][: levels + 1]:
        if (parent / "plan.json").is_file():
            return parent
    return None
