"""Every learned drafter is lossless: greedy output equals plain decoding, and
rejection sampling with the drafter's real (non one-hot) q reproduces the
target's distribution. Also: a draft with another tokenizer is refused, and
the torch twin used for training computes what the native head computes."""

from __future__ import annotations

import json

import pytest
import torch

from specwise import SamplingParams, SpeculativeConfig
from specwise.demo_prompts import DEMO_PROMPTS
from specwise.drafters.factory import default_eagle_path
from specwise.engine import Engine
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.sampling import probabilities
from specwise.sequence import Sequence
from specwise.verify import verify_stochastic

pytestmark = pytest.mark.slow

# Chi-square critical values at significance 0.001 by degrees of freedom
# (scipy.stats.chi2.ppf(0.999, df)); the generators are seeded, so runs are repeatable.
CHI2_CRIT_P001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322, 8: 26.124, 9: 27.877}


@pytest.fixture(scope="module")
def draft_dir(tmp_path_factory, llm):
    """A real two-layer draft model: the target's first and last layers, its
    embedding and norm (what `train-draft model` starts from, untrained)."""
    from specwise.models.loader import load_checkpoint
    from specwise.train.draft_model import save_hf_dir
    from dataclasses import replace

    weights = load_checkpoint(llm.source, weights="fp32").weights
    last = llm.config.num_layers - 1
    kept = {"model.embed_tokens.weight": weights["model.embed_tokens.weight"], "model.norm.weight": weights["model.norm.weight"]}
    for new, old in enumerate((0, last)):
        prefix = f"model.layers.{old}."
        kept.update({f"model.layers.{new}.{k[len(prefix):]}": v for k, v in weights.items() if k.startswith(prefix)})
    path = tmp_path_factory.mktemp("draft")
    save_hf_dir(path, replace(llm.config, num_layers=2), kept, llm.tokenizer)
    return path


def _specs(draft_dir) -> list[SpeculativeConfig]:
    specs = [
        SpeculativeConfig("layerskip:8", 4),
        SpeculativeConfig("layerskip:0-3,29", 3),
        SpeculativeConfig(f"draft:{draft_dir}", 4),
    ]
    if default_eagle_path(str(_default_source())).exists():
        specs += [SpeculativeConfig("eagle", 5), SpeculativeConfig("eagle", 4, draft_vocab=4096), SpeculativeConfig("ngram+eagle", 4)]
    return specs


def _default_source():
    from specwise.models.default import default_model_path

    return default_model_path()


def test_every_drafter_is_greedy_lossless_alone_and_batched(llm, draft_dir):
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    plain = [r.token_ids for r in llm.generate(DEMO_PROMPTS, params)]
    for spec in _specs(draft_dir):
        for concurrency in (1, 4):
            out = llm.generate(DEMO_PROMPTS, params, spec, concurrency=concurrency)
            assert [r.token_ids for r in out] == plain, f"{spec.drafter} (K={spec.num_speculative_tokens}, x{concurrency}) diverged"
            assert sum(r.stats.drafted for r in out) > 0
        if spec.drafter.startswith(("eagle", "ngram+eagle", "draft")):
            assert sum(r.stats.accepted for r in out) > 0, f"{spec.drafter} never accepted: the test would prove little"


def _first_token_q(llm, spec: SpeculativeConfig, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(target p, drafter q) for the token after a prompt and its first sampled token."""
    cache = KVCache(llm.config, 1, 512)
    drafter = llm.drafters.build(spec, cache)
    engine = Engine(llm.model, llm.tokenizer, cache)
    ids = llm.encode_messages([{"role": "user", "content": "Write a sentence about the sea."}], chat=True)
    seq = Sequence("q", list(ids), len(ids), params, slot=-1, generator=torch.Generator().manual_seed(1), drafter=drafter)
    engine.admit(seq)
    engine.step([seq], [0])  # the whole prompt; emits the first token
    [draft] = drafter.propose([seq], [1])
    assert draft.probs is not None and draft.probs.shape == (1, llm.config.vocab_size)
    full = llm.model.forward(torch.tensor(seq.token_ids), torch.arange(len(seq.token_ids)), torch.zeros(len(seq.token_ids), dtype=torch.long), KVCache(llm.config, 1, 512), torch.tensor([len(seq.token_ids) - 1]))
    engine.finish(seq)
    return probabilities(full, params)[0], draft.probs[0]


def test_rejection_sampling_with_each_drafters_real_q_matches_the_target(llm, draft_dir):
    params = SamplingParams(temperature=1.0, top_k=8)
    trials = 20_000
    for spec in _specs(draft_dir):
        p, q = _first_token_q(llm, spec, params)
        assert (q > 0).sum() > 1, f"{spec.drafter}: q is one-hot, the test needs a real distribution"
        g = torch.Generator().manual_seed(7)
        drafts = torch.multinomial(q, trials, replacement=True, generator=g)
        rows = torch.stack([p, p])  # the bonus row is never looked at: only the first emitted token
        emitted, accepted = torch.zeros(p.shape[0]), 0
        for d in drafts.tolist():
            n, nxt = verify_stochastic(rows, torch.tensor([d]), q[None], g)
            emitted[d if n else nxt] += 1
            accepted += n
        assert emitted[p == 0].sum() == 0, f"{spec.drafter}: emitted a token the target cannot sample"
        expected = p * trials
        bins = expected >= 5
        stat = (((emitted[bins] - expected[bins]) ** 2) / expected[bins]).sum().item()
        df = int(bins.sum()) - 1
        assert stat < CHI2_CRIT_P001[df], f"{spec.drafter}: chi-square {stat:.1f} >= {CHI2_CRIT_P001[df]} (df {df}), acceptance {accepted / trials:.2f}"


def test_draft_with_another_tokenizer_is_refused_naming_the_id(tmp_path, llm):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel

    from specwise.models.config import ModelConfig
    from specwise.models.tokenizer import Tokenizer
    from specwise.train.draft_model import save_hf_dir

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "</s>": 3}
    tok_file = tmp_path / "src.json"
    HFTokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(tok_file))
    c = ModelConfig(len(vocab), 16, 1, 2, 2, 32, 10000.0, 1e-5, 256, True)
    g = torch.Generator().manual_seed(0)
    weights = {"model.embed_tokens.weight": torch.randn(len(vocab), 16, generator=g), "model.norm.weight": torch.ones(16)}
    for name, shape in {"input_layernorm": (16,), "post_attention_layernorm": (16,), "self_attn.q_proj": (16, 16), "self_attn.k_proj": (16, 16),
                        "self_attn.v_proj": (16, 16), "self_attn.o_proj": (16, 16), "mlp.gate_proj": (32, 16), "mlp.up_proj": (32, 16), "mlp.down_proj": (16, 32)}.items():  # fmt: skip
        weights[f"model.layers.0.{name}.weight"] = torch.randn(*shape, generator=g)
    save_hf_dir(tmp_path / "other", c, weights, Tokenizer(tok_file, None, None, [3]))
    target_token = {i: t for t, i in llm.tokenizer.vocab().items()}[0]
    with pytest.raises(SpecwiseError, match=rf"tokenizer differs from the target's at id 0 \(target {target_token!r}, draft '\[UNK\]'\)"):
        llm.generate(["hi"], SamplingParams(max_tokens=2), SpeculativeConfig(f"draft:{tmp_path / 'other'}", 2))
    from tests.test_cli_errors import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("generate", "hi", "--drafter", f"draft:{tmp_path / 'other'}", "--max-tokens", "2"), "differs from the target's at id 0")


def test_a_draft_is_refused_for_its_tokenizer_before_its_architecture(tmp_path, llm):
    """A Gemma-3-like GGUF (another architecture, another vocabulary, no weights at all):
    the error names the tokenizer, which is why it can never work, not the
    architecture, and comes from the metadata alone."""
    import gguf

    path = tmp_path / "gemma3.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<pad>", "<eos>", "<bos>", "\u2581the"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    target_token = {i: t for t, i in llm.tokenizer.vocab().items()}[0]
    with pytest.raises(SpecwiseError, match=rf"tokenizer differs from the target's at id 0 \(target {target_token!r}, draft '<pad>'\)"):
        llm.drafters.build(SpeculativeConfig(f"draft:{path}", 2), llm.cache)


def test_torch_eagle_head_computes_what_the_native_head_computes(llm, tmp_path):
    from specwise.drafters.eagle import EagleDrafter, load_eagle, save_eagle
    from specwise.train.eagle import EagleHead
    from specwise.train.torch_llama import rope_tables

    c = llm.config
    torch.manual_seed(0)
    head = EagleHead(c)
    exported = head.export(torch.arange(c.vocab_size))
    save_eagle(tmp_path / "h.safetensors", exported, {})
    weights = load_eagle(tmp_path / "h.safetensors", llm.model)
    with torch.no_grad():  # the torch twin, with the same fp16-rounded weights
        head.fc.weight.copy_(weights["fc.weight"].float())
        head.layer.load_hf_state({k: v.float() for k, v in weights.items()}, "layer.")
    drafter = EagleDrafter(llm.model, weights, num_slots=1, max_len=64)
    t = 12
    feats = torch.randn(t, c.hidden_size)
    tokens = torch.randint(0, c.vocab_size, (t,))
    cos, sin = rope_tables(c, t)
    with torch.no_grad():
        want = head(feats[None], llm.model.embed(tokens)[None], cos, sin)[0]
    native_logits = drafter._forward([], feats.contiguous(), tokens.tolist(), list(range(t)), [0] * t, None)
    want_logits = llm.model.project(want.contiguous())
    assert torch.allclose(native_logits, want_logits, atol=2e-3, rtol=1e-4), (native_logits - want_logits).abs().max()


def test_bad_drafter_specs_are_clear_errors(llm):
    for spec, fragment in [
        ("layerskip:x", "bad layer set"),
        ("layerskip:40", "does not exist"),
        ("draft", "needs a path"),
        ("eagle:/nonexistent.safetensors", "not found"),
        ("none+ngram", "cannot be chained"),
        ("medusa", "unknown drafter"),
    ]:
        with pytest.raises(SpecwiseError, match=fragment):
            llm.generate(["hi"], SamplingParams(max_tokens=2), SpeculativeConfig(spec, 2))


def test_trained_eagle_ships_with_its_training_record():
    path = default_eagle_path(str(_default_source()))
    if not path.exists():
        pytest.skip("no shipped EAGLE head")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    assert meta["samples"] > 0 and meta["epochs"] > 0
