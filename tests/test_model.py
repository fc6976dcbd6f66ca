"""model.py: the transformer's gradients, response log-probabilities against float64 math, LoRA on/off."""
import pytest
import torch

import checkpoint
import model
from fakes import tiny_hf_model, tiny_model

F32_EPS, BF16_EPS = 2.0 ** -23, 2.0 ** -8


def test_gradient_checkpointing_same_gradients(tmp_path):
    pytest.importorskip("transformers", reason="transformers writes the tiny checkpoint (requirements-dev.txt)")
    _, folder = tiny_hf_model("llama", tmp_path)
    ours, _ = checkpoint.load(folder)
    ours.train()
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(6))
    grads = []
    for ckpt in (False, True):
        ours.zero_grad()
        ours.gradient_checkpointing = ckpt
        ours(ids).logsumexp(-1).sum().backward()
        grads.append(ours.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def padded_batch():
    """3 sequences, right-padded, with responses of 7, 5 and 4 predicted tokens (masks by hand)."""
    ids = torch.randint(4, 256, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:], mask[2, 6:] = 0, 0
    resp = torch.zeros_like(ids)
    resp[0, 5:], resp[1, 4:9], resp[2, 2:6] = 1, 1, 1
    return ids, mask, resp


def float64_reference(m, ids, mask, resp):
    """sum_{t in y} log softmax(z_{t-1})[y_t] from the model's full logits, in float64; and the magnitude
    sum_t (|logsumexp z_{t-1}| + |z_{t-1}[y_t]|) that float32 rounding errors scale with."""
    with torch.no_grad():
        logits = m(ids, mask).double()[:, :-1]
    target = logits.gather(-1, ids[:, 1:, None])[..., 0]
    lse = torch.logsumexp(logits, -1)
    on = resp[:, 1:].double()
    return ((target - lse) * on).sum(-1), ((target.abs() + lse.abs()) * on).sum(-1)


def test_sequence_logps_equal_float64_log_softmax_and_count_response_tokens():
    m = tiny_model(0)
    ids, mask, resp = padded_batch()
    ref, magnitude = float64_reference(m, ids, mask, resp)
    with torch.no_grad():
        logps, n_tokens = model.sequence_logps(m, ids, mask, resp)
        from_hidden, n_hidden = model.response_logps(m.hidden(ids, mask), m.lm_head.weight, ids, resp)
    assert logps.dtype == torch.float32 and n_tokens.tolist() == n_hidden.tolist() == [7, 5, 4]
    assert ((logps.double() - ref).abs() <= 8 * F32_EPS * magnitude).all(), (logps, ref)
    assert torch.equal(logps, from_hidden)  # sequence_logps is response_logps on model.hidden
    for i in range(3):  # a row alone (its padding cut off) gives the batched value
        n = int(mask[i].sum())
        with torch.no_grad():
            alone, _ = model.sequence_logps(m, ids[i:i + 1, :n], mask[i:i + 1, :n], resp[i:i + 1, :n])
        assert abs(float(alone) - float(logps[i])) <= 8 * F32_EPS * float(magnitude[i])
    with torch.no_grad():
        none, n_none = model.sequence_logps(m, ids, mask, torch.zeros_like(resp))
    assert none.tolist() == [0.0, 0.0, 0.0] and n_none.tolist() == [0, 0, 0]


def test_sequence_logps_under_autocast_runs_the_output_layer_in_bfloat16():
    m = tiny_model(0)
    ids, mask, resp = padded_batch()
    ref, magnitude = float64_reference(m, ids, mask, resp)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logps, _ = model.sequence_logps(m, ids, mask, resp)
    assert logps.dtype == torch.float32
    assert ((logps.double() - ref).abs() <= 4 * BF16_EPS * magnitude).all(), (logps, ref)
    assert ((logps.double() - ref).abs() > 8 * F32_EPS * magnitude).any()  # it really ran in bfloat16


def test_lora_starts_as_the_base_and_disables_back_to_it():
    m = tiny_model(1)
    ids = torch.randint(4, 256, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = m(ids)
    params = model.add_lora(m, rank=4, alpha=8)
    assert len(params) == 2 * len(model.LORA_TARGETS) * 2 and all(p.requires_grad for p in params)
    assert not m.embed.weight.requires_grad
    with torch.no_grad():
        assert torch.equal(m(ids), base)  # B = 0: the adapted model starts as the base
        for p in params:
            p.normal_(0, 0.3)
        assert (m(ids) - base).abs().max() > 1e-2
        with model.lora_disabled(m):
            assert torch.equal(m(ids), base)
        assert (m(ids) - base).abs().max() > 1e-2  # re-enabled on leaving


# ----------------------------------------------------------------------------- Gemma-2 pieces

def test_softcapped_logprobs_equal_float64_log_softmax_and_their_gradient():
    """log softmax(c tanh(h W^T / c))[y] in chunks with recomputation: value and gradient against float64 autograd."""
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(7, 16, generator=gen, dtype=torch.float64).float().requires_grad_()
    w = (torch.randn(50, 16, generator=gen) * 2).requires_grad_()
    y = torch.randint(0, 50, (7,), generator=gen)
    old, model.SOFTCAP_CHUNK_BYTES = model.SOFTCAP_CHUNK_BYTES, 3 * 50 * 4  # 3 rows a chunk: 3 chunks
    try:
        out = model.softcapped_logprobs(h, w, y, 2.5)
    finally:
        model.SOFTCAP_CHUNK_BYTES = old
    out.sum().backward()
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    z = 2.5 * torch.tanh(h64 @ w64.t() / 2.5)
    ref = torch.log_softmax(z, -1)[torch.arange(7), y]
    ref.sum().backward()
    assert (out.double() - ref).abs().max() < 1e-5
    assert (h.grad.double() - h64.grad).abs().max() < 1e-5 and (w.grad.double() - w64.grad).abs().max() < 1e-5
    assert (torch.log_softmax(h64 @ w64.t(), -1)[torch.arange(7), y] - ref).abs().max() > 0.1  # the cap matters


def test_attention_masks_by_hand():
    """Causal, padding keys hidden, a window of 2 (the query and the key before it), a padding query sees itself."""
    am = torch.tensor([[0, 1, 1, 1]])
    assert model.attention_masks(torch.ones(1, 4, dtype=torch.long), 0, 4) is None  # plain causal: SDPA's fast path
    assert model.attention_masks(torch.ones(1, 4, dtype=torch.long), 0, 4, window=4) is None
    full = model.attention_masks(am, 0, 4)[0, 0].int().tolist()
    assert full == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    slide = model.attention_masks(torch.ones(1, 4, dtype=torch.long), 0, 4, window=2)[0, 0].int().tolist()
    assert slide == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    step = model.attention_masks(torch.ones(1, 5, dtype=torch.long), 4, 1, window=2)[0, 0].int().tolist()
    assert step == [[0, 0, 0, 1, 1]]  # decoding position 4 with a cache: keys 3 and 4 only


def test_offset_rms_norm_and_softcapped_attention_equal_float64_formulas():
    gen = torch.Generator().manual_seed(1)
    x, g = torch.randn(3, 8, generator=gen), torch.randn(8, generator=gen) * 0.3
    x64 = x.double()
    ref = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + g.double())
    assert (model.offset_rms_norm(x, g, 1e-6, 1.0).double() - ref).abs().max() < 1e-6
    q, k, v = (torch.randn(1, h, 5, 4, generator=gen) * 3 for h in (4, 2, 2))
    y = model.softcapped_attention(q, k, v, None, 0.5, 2.0)
    q64, k64, v64 = q.double(), k.double().repeat_interleave(2, 1), v.double().repeat_interleave(2, 1)
    scores = 2.0 * torch.tanh(q64 @ k64.transpose(-1, -2) * 0.5 / 2.0)
    scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    assert (y.double() - torch.softmax(scores, -1) @ v64).abs().max() < 1e-5
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5, enable_gqa=True)
    assert (y - plain).abs().max() > 1e-2  # the cap of 2 bends these scores
