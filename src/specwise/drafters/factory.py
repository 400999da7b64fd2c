"""From a drafter spec string (``--drafter``) to a drafter bound to the target.

Loaded draft weights are kept across calls; the drafter objects themselves are
built per run, because their caches follow the target cache's slots.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from specwise.drafters.auto import AutoDrafter
from specwise.drafters.autoregressive import trimmed_head
from specwise.drafters.base import Drafter
from specwise.drafters.eagle import EagleDrafter, load_eagle
from specwise.drafters.fallback import FallbackDrafter
from specwise.drafters.grammar import GrammarDrafter, forces
from specwise.drafters.model import ModelDrafter, check_tokenizers, check_vocab
from specwise.drafters.ngram import NgramDrafter
from specwise.drafters.suffix import SuffixDrafter, SuffixStore
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.models.llama import LlamaModel
from specwise.models.loader import load_checkpoint, read_vocab

if TYPE_CHECKING:
    from specwise.api import LLM, SpeculativeConfig

KINDS = ("none", "ngram", "suffix", "draft", "layerskip", "eagle", "auto", "grammar")


def parse_drafter(spec: str) -> list[tuple[str, str | None]]:
    """'kind[:arg][+kind[:arg]...]' -> [(kind, arg), ...], rejecting what can be
    rejected before any loading. A chain falls back from each drafter to the next."""
    parts = [_parse_one(part) for part in spec.split("+")]
    if len(parts) > 1 and any(kind in ("none", "auto") for kind, _ in parts):
        raise SpecwiseError(f"'none' and 'auto' cannot be chained: {spec!r}")
    return parts


def _parse_one(spec: str) -> tuple[str, str | None]:
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise SpecwiseError(f"unknown drafter {spec!r} (choose from none, ngram, suffix, draft:PATH, layerskip[:LAYERS], eagle[:PATH], auto, grammar)")
    if kind == "draft" and not arg:
        raise SpecwiseError("drafter 'draft' needs a path: draft:PATH (a GGUF file or Hugging Face directory)")
    if kind in ("none", "ngram", "suffix", "auto", "grammar") and arg:
        raise SpecwiseError(f"drafter {kind!r} takes no argument, got {spec!r}")
    if kind == "layerskip" and arg:
        parse_layers(arg)
    return kind, arg or None


def parse_layers(text: str) -> list[int]:
    """'12' = the first 12 layers; '0-9,29' = an explicit set."""
    try:
        if text.isdigit():
            return list(range(int(text)))
        layers: set[int] = set()
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SpecwiseError(f"bad layer set {text!r}: use N (the first N layers) or a list such as 0-9,29") from None
    if not layers:
        raise SpecwiseError(f"bad layer set {text!r}: no layers")
    return sorted(layers)


def default_eagle_path(model_key: str) -> Path:
    """The head shipped with specwise for this target file, if there is one."""
    return Path(str(resources.files("specwise") / "data" / f"eagle-{Path(model_key).stem}.safetensors"))


class DrafterFactory:
    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.target, self.tokenizer, self.model_key = llm.model, llm.tokenizer, str(llm.source)
        self._draft_models: dict[str, tuple[LlamaModel, torch.Tensor | None]] = {}
        self._eagle: dict[str, dict[str, torch.Tensor]] = {}
        self.suffix_store = SuffixStore()
        """Outputs of the requests this model served, for every suffix drafter built here."""

    def build(self, spec: SpeculativeConfig, cache: KVCache, *, forced: bool = False) -> Drafter:
        """``forced`` puts the grammar's forced tokens ahead of the spec's drafter (for
        constrained requests), unless the spec already names them."""
        parts = parse_drafter(spec.drafter)
        drafters = [self._auto(spec, cache)] if parts[0][0] == "auto" else [self._build_one(kind, arg, spec, cache) for kind, arg in parts]
        if forced and not any(forces(d) for d in drafters):
            drafters.insert(0, GrammarDrafter())
        return drafters[0] if len(drafters) == 1 else FallbackDrafter(drafters)

    def _auto(self, spec: SpeculativeConfig, cache: KVCache) -> AutoDrafter:
        """Free drafters beside the one this machine's calibration picked, chosen per segment."""
        from specwise.calibrate import best_drafter

        suffix, ngram = SuffixDrafter(self.suffix_store), NgramDrafter(spec.ngram_min, spec.ngram_max)
        candidates: list[Drafter] = [FallbackDrafter([suffix, ngram]), suffix, ngram]
        calibrated = best_drafter(self.llm, spec)
        if calibrated not in ("none", "ngram", "suffix", "suffix+ngram"):  # "none": plain measured fastest there
            candidates.append(self.build(replace(spec, drafter=calibrated), cache))
        return AutoDrafter(candidates)

    def _build_one(self, kind: str, arg: str | None, spec: SpeculativeConfig, cache: KVCache) -> Drafter:
        if kind == "grammar":
            return GrammarDrafter()
        if kind == "ngram":
            return NgramDrafter(spec.ngram_min, spec.ngram_max)
        if kind == "suffix":
            return SuffixDrafter(self.suffix_store)
        if kind == "draft":
            model, counts = self._draft_model(arg or "")
            head = trimmed_head(model, counts, spec.draft_vocab)
            return ModelDrafter(f"draft:{arg}", model, KVCache(model.config, cache.num_slots, cache.max_len), head=head)
        if kind == "layerskip":
            drafter = self.layerskip(parse_layers(arg) if arg else self._calibrated_layers(spec), cache)
            if spec.draft_vocab:
                # The shipped head's frequencies rank the target's vocabulary.
                shipped = default_eagle_path(self.model_key)
                counts = self._eagle_weights(shipped)["token_counts"] if shipped.exists() else None
                drafter.head = trimmed_head(self.target, counts, spec.draft_vocab)
            return drafter
        if kind == "eagle":
            path = Path(arg) if arg else default_eagle_path(self.model_key)
            if not arg and not path.exists():
                raise SpecwiseError("no EAGLE head ships for this model: train one with `specwise train-draft eagle` and pass eagle:PATH")
            return EagleDrafter(self.target, self._eagle_weights(path), cache.num_slots, cache.max_len, spec.draft_vocab)
        raise SpecwiseError(f"drafter {spec.drafter!r} does not draft")

    def layerskip(self, layers: list[int], cache: KVCache) -> ModelDrafter:
        n = len(self.target.layers)
        if layers[-1] >= n:
            raise SpecwiseError(f"layer {layers[-1]} does not exist: the target has layers 0-{n - 1}")
        if len(layers) == n:
            raise SpecwiseError("a layer-skip draft must skip at least one layer")
        prefix = layers == list(range(len(layers)))
        own = cache if prefix else KVCache(replace(self.target.config, num_layers=len(layers)), cache.num_slots, cache.max_len)
        name = f"layerskip:{len(layers)}" if prefix else "layerskip:" + ",".join(map(str, layers))
        return ModelDrafter(name, self.target, own, layers=layers, shares_target_cache=prefix)

    def _eagle_weights(self, path: Path) -> dict[str, torch.Tensor]:
        if str(path) not in self._eagle:
            self._eagle[str(path)] = load_eagle(path, self.target)
        return self._eagle[str(path)]

    def _calibrated_layers(self, spec: SpeculativeConfig) -> list[int]:
        from specwise.calibrate import best_layerskip

        return parse_layers(best_layerskip(self.llm, spec))

    def _draft_model(self, path: str) -> tuple[LlamaModel, torch.Tensor | None]:
        """The loaded draft and its token counts (written by `train-draft model`; they rank the
        vocabulary for --draft-vocab)."""
        if path not in self._draft_models:
            check_vocab(self.tokenizer, read_vocab(path))  # before the architecture or weights: the real blocker first
            ckpt = load_checkpoint(path)
            check_tokenizers(self.tokenizer, ckpt.tokenizer)
            c, t = ckpt.config, self.target.config
            if c.vocab_size != t.vocab_size:
                raise SpecwiseError(f"the draft model's vocabulary has {c.vocab_size} rows, the target's {t.vocab_size}")
            counts = ckpt.weights.pop("token_counts", None)
            self._draft_models[path] = (LlamaModel.from_checkpoint(ckpt), counts)
        return self._draft_models[path]

