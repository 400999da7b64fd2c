"""Loads a Llama-family checkpoint (GGUF file or Hugging Face directory).

Both formats end as the same thing: a ``ModelConfig``, a state dict in Hugging
Face names and layout, and a ``Tokenizer``. A GGUF's weights in a block format
the kernels read (Q8_0, Q4_0, Q4_1) stay in it unless fp32 is asked for; a
Hugging Face directory's can be quantized at load.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specwise.errors import SpecwiseError
from specwise.models.config import ModelConfig
from specwise.models.formats import QK, QUANT_TYPES, WEIGHTS
from specwise.models.quant import QuantTensor
from specwise.models.tokenizer import Tokenizer
from specwise.paths import cache_dir

SUPPORTED_ARCHITECTURES = ("llama",)


@dataclass(slots=True)
class Checkpoint:
    config: ModelConfig
    weights: dict[str, torch.Tensor | QuantTensor]
    """Tensors under Hugging Face Llama names (``model.layers.0.self_attn.q_proj.weight``...):
    fp32, or a matrix still in its block format."""
    tokenizer: Tokenizer
    source: Path

    @property
    def weight_format(self) -> str:
        """What the matrices are stored as ("fp32", "q4_1+q8_0"...): step costs and
        calibrations are measured per format."""
        kinds = sorted({w.kind for w in self.weights.values() if isinstance(w, QuantTensor)})
        return "+".join(kinds) if kinds else "fp32"


def load_checkpoint(path: str | Path, weights: str = "auto", quantize: str | None = None) -> Checkpoint:
    """``quantize``: a block format (``QUANT_TYPES``) for every matrix still in fp32
    after loading (a Hugging Face directory's, or a GGUF's types without a kernel)."""
    if weights not in WEIGHTS:
        raise SpecwiseError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if quantize is not None and quantize not in QUANT_TYPES:
        raise SpecwiseError(f"cannot quantize to {quantize!r} (kernels exist for {', '.join(QUANT_TYPES)})")
    if quantize is not None and weights == "fp32":
        raise SpecwiseError("--quantize and --weights fp32 contradict each other")
    path = Path(path).expanduser()
    if not path.exists():
        raise SpecwiseError(f"model not found: {path}")
    ckpt = _load_hf_dir(path) if path.is_dir() else _load_gguf(path, keep_quantized=weights == "auto")
    if quantize is not None:
        _quantize(ckpt.weights, quantize)
    return ckpt


def read_vocab(path: str | Path) -> dict[int, str]:
    """id -> token of a checkpoint, from its tokenizer metadata alone: a draft's
    tokenizer is checked before its architecture or weights load, since a
    mismatch is the reason it can never work."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SpecwiseError(f"model not found: {path}")
    if path.is_dir():
        file = path / "tokenizer.json"
        if not file.exists():
            raise SpecwiseError(f"{path} has no tokenizer.json")
        from tokenizers import Tokenizer as HFTokenizer

        try:
            vocab = HFTokenizer.from_file(str(file)).get_vocab(with_added_tokens=True)
        except Exception as exc:  # the tokenizers library raises its own exception type
            raise SpecwiseError(f"{file} is not a readable tokenizer: {exc}") from exc
        return {i: tok for tok, i in vocab.items()}
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("tokenizer.ggml.tokens")
    except Exception as exc:  # the reader raises ValueError/struct errors/IndexError on junk
        raise SpecwiseError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    if field is None:
        raise SpecwiseError(f"{path.name} carries no tokenizer (tokenizer.ggml.tokens)")
    return dict(enumerate(field.contents()))


def _is_matrix(name: str) -> bool:
    return name.endswith("_proj.weight") or name in ("model.embed_tokens.weight", "lm_head.weight")


def _quantize(weights: dict[str, torch.Tensor | QuantTensor], kind: str) -> None:
    for name, w in weights.items():
        if _is_matrix(name) and not isinstance(w, QuantTensor):
            weights[name] = QuantTensor.quantize(w, kind)


# --------------------------------------------------------------------- GGUF

_GGUF_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _unpermute(w: torch.Tensor | QuantTensor, heads: int) -> torch.Tensor | QuantTensor:
    """Undo llama.cpp's q/k row interleave so rotate-half RoPE applies (HF layout);
    a row of blocks moves as a whole, like a row of floats."""
    if isinstance(w, QuantTensor):
        rows = w.blocks.shape[0]
        return QuantTensor(w.kind, w.blocks.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.blocks.shape), w.in_features)
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, -1).transpose(1, 2).reshape(w.shape)


def _load_gguf(path: Path, keep_quantized: bool) -> Checkpoint:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct errors/IndexError on junk
        raise SpecwiseError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from exc

    def field(name: str, default: object = None) -> object:
        f = reader.fields.get(name)
        return default if f is None else f.contents()

    def required(name: str) -> object:
        value = field(name)
        if value is None:
            raise SpecwiseError(f"{path.name} lacks the metadata key {name!r}")
        return value

    arch = field("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SpecwiseError(f"unsupported architecture {arch!r} in {path.name} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    heads = int(required(f"{arch}.attention.head_count"))
    kv_heads = int(field(f"{arch}.attention.head_count_kv", heads))
    tensors = {t.name: t for t in reader.tensors}
    vocab = len(field("tokenizer.ggml.tokens", [])) or int(required(f"{arch}.vocab_size"))
    config = ModelConfig(
        vocab_size=vocab,
        hidden_size=int(required(f"{arch}.embedding_length")),
        num_layers=int(required(f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=int(required(f"{arch}.feed_forward_length")),
        rope_theta=float(field(f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(required(f"{arch}.attention.layer_norm_rms_epsilon")),
        max_position=int(required(f"{arch}.context_length")),
        tie_embeddings="output.weight" not in tensors,
    )

    tokens = field("tokenizer.ggml.tokens", [])
    eos_ids = {int(field("tokenizer.ggml.eos_token_id", -1))}
    eot = field("tokenizer.ggml.eot_token_id")
    if eot is not None:
        eos_ids.add(int(eot))
    if "<|endoftext|>" in tokens:
        eos_ids.add(tokens.index("<|endoftext|>"))
    eos_ids.discard(-1)
    bos = field("tokenizer.ggml.bos_token_id")
    tokenizer = Tokenizer(
        _gguf_tokenizer_file(path),
        field("tokenizer.chat_template"),
        tokens[int(bos)] if bos is not None else None,
        sorted(eos_ids),
    )
    reader.fields.clear()  # the vocabulary's parsed fields are ~100 MB of small objects: gone before the weights load

    fallback: Counter[str] = Counter()

    def tensor(name: str) -> torch.Tensor | QuantTensor:
        t = tensors[name]
        shape = tuple(reversed(t.shape.tolist()))
        kind = t.tensor_type.name.lower()
        if len(shape) == 2 and keep_quantized:
            if kind in QUANT_TYPES and shape[1] % QK == 0:
                return QuantTensor(kind, t.data.reshape(shape[0], -1), shape[1])
            if kind not in ("f32", "f16", "bf16"):
                fallback[t.tensor_type.name] += 1
        data = dequantize(t.data, t.tensor_type)
        return torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))

    try:
        weights: dict[str, torch.Tensor | QuantTensor] = {"model.embed_tokens.weight": tensor("token_embd.weight"), "model.norm.weight": tensor("output_norm.weight")}
        if not config.tie_embeddings:
            weights["lm_head.weight"] = tensor("output.weight")
        for i in range(config.num_layers):
            for short, long in _GGUF_NAMES.items():
                w = tensor(f"blk.{i}.{short}.weight")
                if short == "attn_q":
                    w = _unpermute(w, heads)
                elif short == "attn_k":
                    w = _unpermute(w, kv_heads)
                weights[f"model.layers.{i}.{long}.weight"] = w
    except KeyError as exc:
        raise SpecwiseError(f"{path.name} lacks tensor {exc.args[0]}: not a complete Llama checkpoint") from exc
    except (ValueError, NotImplementedError) as exc:
        raise SpecwiseError(f"cannot dequantize {path.name}: {exc}") from exc
    if fallback:
        kinds = ", ".join(f"{n} x {k}" for k, n in sorted(fallback.items()))
        print(f"specwise: no kernel for {kinds} in {path.name}; those matrices run in fp32 (--quantize q8_0 requantizes them)", file=sys.stderr)

    return Checkpoint(config, weights, tokenizer, path)


def _gguf_tokenizer_file(path: Path) -> Path:
    """tokenizer.json converted from the GGUF by transformers, cached (conversion takes seconds)."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "tokenizers" / key / "tokenizer.json"
    if not target.exists():
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except Exception as exc:  # transformers raises many types for unsupported tokenizers
            raise SpecwiseError(f"cannot build a tokenizer from {path.name}: {exc}") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tok.backend_tokenizer.save(str(tmp))
        tmp.replace(target)
    return target


# ------------------------------------------------------- Hugging Face dir


def _load_hf_dir(path: Path) -> Checkpoint:
    from safetensors.torch import load_file

    config_file = path / "config.json"
    if not config_file.exists():
        raise SpecwiseError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        cfg = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise SpecwiseError(f"{config_file} is not valid JSON: {exc}") from exc
    if cfg.get("model_type") not in SUPPORTED_ARCHITECTURES:
        raise SpecwiseError(f"unsupported architecture {cfg.get('model_type')!r} in {config_file}")
    try:
        config = _hf_config(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecwiseError(f"{config_file} lacks or mangles {exc}: not a Llama config") from exc
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise SpecwiseError(f"{path} has no *.safetensors files")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            weights.update({k: v.float() for k, v in load_file(str(f)).items()})
        except Exception as exc:  # safetensors raises its own error type on a bad header
            raise SpecwiseError(f"{f} is not a readable safetensors file: {exc}") from exc
    tok_file = path / "tokenizer.json"
    if not tok_file.exists():
        raise SpecwiseError(f"{path} has no tokenizer.json")
    tok_cfg_file = path / "tokenizer_config.json"
    try:
        tok_cfg = json.loads(tok_cfg_file.read_text()) if tok_cfg_file.exists() else {}
    except json.JSONDecodeError as exc:
        raise SpecwiseError(f"{tok_cfg_file} is not valid JSON: {exc}") from exc
    vocab = json.loads(tok_file.read_text()).get("added_tokens", [])
    by_text = {t["content"]: t["id"] for t in vocab}
    eos = cfg.get("eos_token_id")
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if isinstance(tok_cfg.get("eos_token"), str) and tok_cfg["eos_token"] in by_text:
        eos_ids.add(by_text[tok_cfg["eos_token"]])
    bos = tok_cfg.get("bos_token")
    tokenizer = Tokenizer(tok_file, tok_cfg.get("chat_template"), bos if isinstance(bos, str) else None, sorted(eos_ids))
    return Checkpoint(config, weights, tokenizer, path)


def _hf_config(cfg: dict) -> ModelConfig:
    heads = int(cfg["num_attention_heads"])
    return ModelConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads", heads),
        intermediate_size=cfg["intermediate_size"],
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position=cfg.get("max_position_embeddings", 2048),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
