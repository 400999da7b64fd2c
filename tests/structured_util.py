"""A tiny world for grammar tests without the real model: a byte-level BPE tokenizer
trained here in milliseconds, and scripted "models" whose logits depend only on
the token (a bigram table) or the position of each row."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from specwise.drafters.base import Draft
from specwise.engine import Engine
from specwise.kv_cache import KVCache
from specwise.models.config import ModelConfig
from specwise.models.tokenizer import Tokenizer
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence
from specwise.structured.constraint import Constraint
from specwise.structured.grammar import GrammarCompiler

EOS = 0
CORPUS = ['{"name": "Ada", "age": 36, "ok": true}', "let me think about it </think> yes no maybe", "abc abd abe 0123456789"]


def tiny_tokenizer(directory: Path) -> Tokenizer:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(CORPUS * 10, trainer)
    path = directory / "tokenizer.json"
    hf.save(str(path))
    return Tokenizer(path, None, None, [EOS])


def tiny_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size, 8, 1, 1, 1, 8, 10000.0, 1e-5, 512, True)


class TableModel:
    """Logits of a row come from a table indexed by the row's token (``by="token"``,
    a bigram model) or by its position (``by="position"``, a script)."""

    def __init__(self, table: torch.Tensor, by: str = "token") -> None:
        self.table, self.by = table, by
        self.config = tiny_config(table.shape[1])

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float().unsqueeze(1)

    def hidden(self, x: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return x if self.by == "token" else positions.float().unsqueeze(1)

    def logits(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.table[hidden[rows, 0].long()]


class ScriptDrafter:
    """Proposes what a function of the sequence says (tokens and, optionally, q)."""

    name = "script"
    needs_features = False
    reports_confidence = False

    def __init__(self, fn) -> None:
        self.fn = fn

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        return [self.fn(s, k) if k else Draft([]) for s, k in zip(seqs, ks)]

    def on_verified(self, seqs, features) -> None:
        pass

    def release(self, seq) -> None:
        pass


class World:
    def __init__(self, tokenizer: Tokenizer, model: TableModel, slots: int = 8) -> None:
        self.tokenizer, self.model = tokenizer, model
        self.engine = Engine(model, tokenizer, KVCache(model.config, slots, 256))  # type: ignore[arg-type]
        self.grammars = GrammarCompiler(tokenizer.file.read_text(), model.config.vocab_size, [EOS])

    def sequence(self, prompt: Seq[int], params: SamplingParams, drafter=None, k: int = 0, generator=None) -> Sequence:
        seq = Sequence("r", list(prompt), len(prompt), params, drafter=drafter, num_speculative_tokens=k, generator=generator)
        if params.constraint is not None:
            seq.grammar = self.grammars.state(params.constraint, params.reasoning_end)
        return seq

    def run(self, seqs: list[Sequence], ks: Seq[int] | None = None) -> list[Sequence]:
        """Decode the sequences together to the end, each drafting its own K every step."""
        for seq in seqs:
            self.engine.admit(seq)
        live = list(seqs)
        while live:
            self.engine.step(live, [s.num_speculative_tokens for s in live])
            for seq in [s for s in live if s.finished]:
                self.engine.finish(seq)
            live = [s for s in live if not s.finished]
        return seqs


def regex(pattern: str) -> Constraint:
    return Constraint.regex(pattern)
