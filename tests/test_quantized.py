"""The quantized fast path: each block format against gguf's own dequantization,
batch invariance of the quantized kernels, and the quantized model against the
fp32-dequantized one on real prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specwise.models import native
from specwise.models.formats import QUANT_TYPES
from specwise.models.quant import QuantTensor, pack

KINDS = sorted(QUANT_TYPES)


def _gguf_dequantized(qt: QuantTensor) -> torch.Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    return torch.from_numpy(np.array(dequantize(qt.blocks, GGMLQuantizationType[qt.kind.upper()]), dtype=np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_block_format_matches_gguf_dequantization(kind):
    """Rows read back out of the kernels' layout equal gguf's dequantization bit for
    bit (40 rows: the last panel is padded), and a linear over them is x @ W^T."""
    torch.manual_seed(0)
    w = torch.randn(40, 96) * torch.linspace(0.01, 3.0, 96)  # blocks of different scales
    qt = QuantTensor.quantize(w, kind)
    ref = _gguf_dequantized(qt).reshape(40, 96)
    packed = pack(qt)
    ids = torch.randperm(40)
    assert torch.equal(packed.rows(ids), ref[ids])
    x = torch.randn(7, 96)
    y = native.linear(x, packed)
    assert y.shape == (7, 40)
    torch.testing.assert_close(y, x.double().matmul(ref.double().T).float(), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_quantized_linear_is_batch_invariant(kind):
    """A row's output is bit-identical alone, among K + 1 verify rows, and in a
    prefill-sized call (each row-tile shape of the kernels is exercised)."""
    torch.manual_seed(1)
    packed = pack(QuantTensor.quantize(torch.randn(200, 128), kind))
    x = torch.randn(70, 128)
    full = native.linear(x, packed)
    for size in (1, 2, 3, 4, 5, 6, 7, 13):
        for start in range(0, 70 - size + 1, 17):
            assert torch.equal(native.linear(x[start : start + size].contiguous(), packed), full[start : start + size])


def test_quantizing_refuses_rows_that_are_not_whole_blocks():
    from specwise.errors import SpecwiseError

    qt = QuantTensor("q8_0", np.zeros((16, 34 * 2), dtype=np.uint8), 50)
    with pytest.raises(SpecwiseError, match="multiple of 32"):
        pack(qt)
    with pytest.raises(SpecwiseError, match="multiple of 32"):
        QuantTensor.quantize(torch.zeros(4, 50), "q4_0")


# ----------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def fp32_llm():
    from specwise import LLM

    return LLM(max_model_len=1024, weights="fp32")


@pytest.mark.slow
def test_the_default_gguf_runs_quantized_by_default(llm, fp32_llm):
    assert llm.weight_format == "q4_1+q8_0"
    assert fp32_llm.weight_format == "fp32"
    assert llm.model_key != fp32_llm.model_key  # step costs are measured per format


@pytest.mark.slow
def test_quantized_logits_and_greedy_tokens_match_the_fp32_path(llm, fp32_llm):
    """Same weights (the file's), different arithmetic: the quantized path scales a
    block's dot product instead of each weight. Measured max |diff| 1.8e-4 on logits
    of magnitude ~30; greedy output is identical on every prompt here, with no tie."""
    from specwise import Request, SamplingParams, SpeculativeConfig
    from specwise.kv_cache import KVCache
    from tests.test_model import PROMPTS

    prompts = [
        *PROMPTS,
        "Write a haiku about the sea.",
        "List the planets of the solar system in order.",
        "What does HTTP status 404 mean?",
    ]
    worst = 0.0
    for text in prompts:
        ids = llm.encode_messages([{"role": "user", "content": text}], chat=True)
        n = len(ids)
        rows = (torch.tensor(ids), torch.arange(n), torch.zeros(n, dtype=torch.long))
        a = llm.model.forward(*rows, KVCache(llm.config, 1, 512))
        b = fp32_llm.model.forward(*rows, KVCache(llm.config, 1, 512))
        worst = max(worst, (a - b).abs().max().item())
    assert worst < 2e-3, f"logits differ by {worst}"
    requests = [Request(id=str(i), prompt=p) for i, p in enumerate(prompts)]
    params, plain = SamplingParams(max_tokens=48, ignore_eos=True), SpeculativeConfig("none")
    for q, f in zip(llm.generate(requests, params, plain), fp32_llm.generate(requests, params, plain)):
        assert q.token_ids == f.token_ids, f"prompt {q.id}: greedy output differs"


@pytest.mark.slow
def test_a_matrix_type_without_a_kernel_runs_in_fp32_with_a_note(tmp_path, capfd, fp32_llm):
    """The default GGUF rewritten with one matrix in Q5_0: it loads, says so in one
    line, and keeps the rest quantized."""
    import gguf
    from gguf.quants import dequantize, quantize

    from specwise import LLM
    from specwise.models.default import default_model_path

    src = gguf.GGUFReader(str(default_model_path()))
    out = tmp_path / "mixed.gguf"
    writer = gguf.GGUFWriter(str(out), "llama")
    for name, field in src.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        else:
            writer.add_key_value(name, value, vtype)
    for t in src.tensors:
        shape = tuple(reversed(t.shape.tolist()))
        if t.name == "blk.0.ffn_down.weight":
            dense = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
            writer.add_tensor(t.name, quantize(dense, gguf.GGMLQuantizationType.Q5_0), raw_dtype=gguf.GGMLQuantizationType.Q5_0)
        else:  # rows of bytes for a block format, of floats for F32
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    capfd.readouterr()
    mixed = LLM(out, max_model_len=256)
    note = capfd.readouterr().err
    assert "no kernel for 1 x Q5_0" in note and len(note.strip().splitlines()) == 1
    assert mixed.weight_format == "q4_1+q8_0"
    assert mixed.model.layers[0].down.kind == "f32" and mixed.model.layers[1].down.kind == "q4_1"
