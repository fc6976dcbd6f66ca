"""model.py against independent references: transformers / peft / gguf as oracles, float64 math, hand cases."""
import json
import math
import os

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

import model

transformers = pytest.importorskip("transformers", reason="transformers is the oracle (pip install -r requirements-dev.txt)")

PARAGRAPH = ("The river wound slowly through the valley, past fields of wheat and old stone farmhouses. "
             "In the evening the light turned golden, and the children walked home along the water, "
             "talking about the fish they had seen and the boats that would come in the spring.")


def write_tiny_tokenizer(folder, vocab_size):
    """A word-level tokenizer with `vocab_size` entries, enough for load() to find a tokenizer.json."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = HFTokenizer(tok_models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "w1", "bos_token": "w2"}, f)


def tiny_hf_model(kind, tmp_path, shard=False, **extra):
    """A tiny random checkpoint written by transformers' save_pretrained (the oracle's own writer)."""
    torch.manual_seed({"llama": 0, "qwen2": 1, "mistral": 2}[kind])
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, initializer_range=0.2, rms_norm_eps=1e-6)
    common.update(extra)
    if kind == "llama":
        cfg = transformers.LlamaConfig(tie_word_embeddings=False, **common)
        hf = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(tie_word_embeddings=True, **common)
        hf = transformers.Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # transformers initialises biases to zero: make them matter
            for layer in hf.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    else:
        cfg = transformers.MistralConfig(tie_word_embeddings=False, **common)
        hf = transformers.MistralForCausalLM(cfg)
    with torch.no_grad():  # RMSNorm gains start at 1: perturb so a wrong mapping shows
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    folder = tmp_path / kind
    hf.save_pretrained(folder, max_shard_size="40KB" if shard else "5GB")
    write_tiny_tokenizer(folder, 128)
    return hf.eval(), folder


def hf_logits(hf, ids, mask=None):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask).logits.float()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_logits_match_transformers(kind, tmp_path):
    hf, folder = tiny_hf_model(kind, tmp_path)
    ours, _ = model.load(folder)
    assert ours.config.qkv_bias == (kind == "qwen2")
    assert ours.config.tie_embeddings == (kind == "qwen2")
    ids = torch.randint(0, 128, (2, 23), generator=torch.Generator().manual_seed(0))
    assert (ours(ids) - hf_logits(hf, ids)).abs().max() < 1e-4
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding: transformers derives no positions from the mask, so compare the real tokens
    ref = hf_logits(hf, ids[:1, 5:])
    assert (ours(ids, mask)[0, 5:] - ref[0]).abs().max() < 1e-4


def test_sharded_checkpoint_and_llama3_rope_scaling(tmp_path):
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    hf, folder = tiny_hf_model("llama", tmp_path, shard=True, rope_parameters=rope, max_position_embeddings=128)
    assert len(list(folder.glob("*.safetensors"))) > 1, "the oracle should have written several shards"
    ours, _ = model.load(folder)
    assert ours.config.rope_scaling["rope_type"] == "llama3"
    ids = torch.randint(0, 128, (1, 80), generator=torch.Generator().manual_seed(1))  # past original_max_position
    assert (ours(ids) - hf_logits(hf, ids)).abs().max() < 1e-4


def test_rope_scaling_read_from_legacy_rope_scaling_key(tmp_path):
    """Published checkpoints write rope_theta / rope_scaling; newer transformers write rope_parameters."""
    _, folder = tiny_hf_model("llama", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_theta"] = 500000.0
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 16}
    (folder / "config.json").write_text(json.dumps(cfg))
    ours, _ = model.load(folder)
    assert ours.config.rope_theta == 500000.0 and ours.config.rope_scaling["factor"] == 8.0
    # float64 reference of the Llama-3 frequency rule
    d = ours.config.head_dim
    expected = []
    for i in range(0, d, 2):
        f = 1.0 / 500000.0 ** (i / d)
        wavelen = 2 * math.pi / f
        if wavelen < 16 / 4.0:
            expected.append(f)
        elif wavelen > 16 / 1.0:
            expected.append(f / 8.0)
        else:
            s = (16 / wavelen - 1.0) / (4.0 - 1.0)
            expected.append((1 - s) * f / 8.0 + s * f)
    assert torch.allclose(ours.inv_freq.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6)


def test_save_loads_in_transformers(tmp_path):
    hf, folder = tiny_hf_model("qwen2", tmp_path)
    ours, tok = model.load(folder)
    model.save(ours, tok, tmp_path / "saved")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    ids = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(2))
    assert (hf_logits(back, ids) - hf_logits(hf, ids)).abs().max() < 1e-4
    again, _ = model.load(tmp_path / "saved")
    assert (again(ids) - ours(ids)).abs().max() < 1e-5


def test_lora_merge_and_peft_adapter(tmp_path):
    peft = pytest.importorskip("peft", reason="peft is the adapter oracle (requirements-dev.txt)")
    hf, folder = tiny_hf_model("llama", tmp_path)
    ours, tok = model.load(folder)
    torch.manual_seed(3)
    params = model.add_lora(ours, rank=4, alpha=8)
    assert all(p.requires_grad for p in params) and len(params) == 2 * 7 * 2
    assert not ours.embed.weight.requires_grad
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.3)  # B starts at zero: give the adapter a real effect
    ids = torch.randint(0, 128, (2, 19), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        adapted = ours(ids)
        with model.lora_disabled(ours):
            base = ours(ids)
    assert (adapted - base).abs().max() > 1e-2
    assert (base - hf_logits(hf, ids)).abs().max() < 1e-4
    model.save_adapter(ours, tmp_path / "adapter")
    peft_model = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids).logits
    assert (peft_logits - adapted).abs().max() < 1e-4
    ours.double()  # merged vs unmerged is an identity of the math: compare it without fp32 rounding
    with torch.no_grad():
        adapted64 = ours.lm_head(ours.hidden(ids)).double()
        model.merge_lora(ours)
        assert not model.lora_modules(ours)
        assert (ours.lm_head(ours.hidden(ids)).double() - adapted64).abs().max() < 1e-5


def test_lora_save_writes_merged_weights(tmp_path):
    _, folder = tiny_hf_model("mistral", tmp_path)
    ours, tok = model.load(folder)
    model.add_lora(ours, rank=2, alpha=4, targets=("q_proj", "down_proj"))
    with torch.no_grad():
        for _, m in model.lora_modules(ours):
            m.lora_B.weight.normal_(0, 0.3)
    model.save(ours, tok, tmp_path / "merged")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.randint(0, 128, (1, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (hf_logits(back, ids) - ours(ids)).abs().max() < 1e-4


def test_gradient_checkpointing_same_gradients(tmp_path):
    _, folder = tiny_hf_model("llama", tmp_path)
    ours, _ = model.load(folder)
    ours.train()
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(6))
    grads = []
    for ckpt in (False, True):
        ours.zero_grad()
        ours.gradient_checkpointing = ckpt
        ours(ids).logsumexp(-1).sum().backward()
        grads.append(ours.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# ----------------------------------------------------------------------------- GGUF

def test_dequantize_matches_gguf_reference(tmp_path):
    """Each block format we read, against the gguf package's own quantiser and dequantiser."""
    gguf = pytest.importorskip("gguf", reason="gguf is the format oracle (requirements-dev.txt)")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 64)).astype(np.float32)
    kinds = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "BF16": 30}
    for name, kind in kinds.items():
        qtype = getattr(gguf.GGMLQuantizationType, name)
        raw = gguf.quants.quantize(w, qtype)
        expected = gguf.quants.dequantize(raw, qtype)
        ours = model.dequantize(kind, list(w.shape), raw.tobytes())
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6, err_msg=name)
        assert np.abs(ours - w).max() < (0.5 if name.startswith("Q4") else 0.05), name


def test_gguf_file_roundtrip_with_unpermute(tmp_path):
    """A tiny llama GGUF written by the gguf package (q/k rows permuted as llama.cpp does) gives HF's logits."""
    gguf = pytest.importorskip("gguf")
    hf, folder = tiny_hf_model("llama", tmp_path)
    c = hf.config
    path = str(tmp_path / "tiny.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_context_length(256)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(128)])
    writer.add_token_types([1] * 128)
    writer.add_token_merges([])

    def permute(w, n_head):  # llama.cpp's convert_hf_to_gguf order: pairwise-interleaved rotary rows
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for k, v in hf.state_dict().items():
        v = v.float().numpy()
        if k in names:
            writer.add_tensor(names[k], v)
            continue
        layer, rest = k.split(".")[2], ".".join(k.split(".")[3:-1])
        if rest == "self_attn.q_proj":
            v = permute(v, c.num_attention_heads)
        if rest == "self_attn.k_proj":
            v = permute(v, c.num_key_value_heads)
        writer.add_tensor(f"blk.{layer}.{parts[rest]}.weight", np.ascontiguousarray(v))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ours, _ = model.load(path)
    ids = torch.randint(0, 128, (2, 13), generator=torch.Generator().manual_seed(7))
    assert (ours(ids) - hf_logits(hf, ids)).abs().max() < 1e-4


def test_broken_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTGGUF" + b"\0" * 64)
    with pytest.raises(model.ModelError, match="bad.gguf: not a GGUF file"):
        model.load(bad)
    with pytest.raises(model.ModelError, match="no such file"):
        model.load(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(model.ModelError, match="no config.json"):
        model.load(tmp_path / "empty_dir")
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(open(model.default_model_path(), "rb").read(2_000_000))
    with pytest.raises(model.ModelError, match="runs past the end"):
        model.load(truncated)


# ----------------------------------------------------------------------------- the embedded default

@pytest.fixture(scope="module")
def default():
    return model.load(None)


@pytest.fixture(scope="module")
def hf_default():
    path = model.default_model_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                           dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return hf, tok


def test_default_perplexity_matches_transformers(default, hf_default):
    ours, tok = default
    hf, hf_tok = hf_default
    ids = tok.encode(PARAGRAPH)
    assert ids == hf_tok(PARAGRAPH, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])

    def ppl(logits):
        nll = torch.nn.functional.cross_entropy(logits[0, :-1].double(), x[0, 1:])
        return math.exp(nll.item())

    with torch.no_grad():
        ours_ppl, hf_ppl = ppl(ours(x)), ppl(hf(input_ids=x).logits)
    assert abs(ours_ppl - hf_ppl) / hf_ppl < 0.03, (ours_ppl, hf_ppl)
    assert ours_ppl < 60, "a real language model: a plain paragraph should not look random"


def test_default_tokenizer_and_chat_template_match_transformers(default, hf_default):
    _, tok = default
    _, hf_tok = hf_default
    for text in ["Hello world!", "  spaces\tand\nnewlines ", "Ünïcödé — émojis 🧱🔥 and 中文", "<|im_start|>x",
                 "numbers 1234567 and code: def f(x): return x**2"]:
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"], text
        if "<|" not in text:  # decode drops special tokens by design
            assert tok.decode(tok.encode(text)) == text
    ids, start = tok.chat("Name a use for a brick.", "Doorstop.")
    messages = [{"role": "user", "content": "Name a use for a brick."}, {"role": "assistant", "content": "Doorstop."}]
    ref = hf_tok.apply_chat_template(messages, tokenize=False)
    assert tok.tok.decode(ids, skip_special_tokens=False) == ref.rstrip("\n")
    prompt_ids, prompt_start = tok.chat("Name a use for a brick.")
    assert prompt_ids == ids[:start] and prompt_start == len(prompt_ids) == start
    ref_prompt = hf_tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert tok.tok.decode(prompt_ids, skip_special_tokens=False) == ref_prompt
    assert ids[-1] == tok.eot_id == tok.tok.token_to_id("<|im_end|>")


def test_default_greedy_answer_names_paris(default):
    ours, tok = default
    [[answer]] = model.generate(ours, tok, ["What is the capital of France?"], max_new_tokens=16, temperature=0.0)
    assert "Paris" in answer


def test_batched_generation_equals_one_by_one_and_cache_equals_recompute(default):
    ours, tok = default
    prompts = ["What is the capital of France?", "Give one creative use for a paperclip.", "Say hi."]
    batched = model.generate(ours, tok, prompts, max_new_tokens=12, temperature=0.0)
    single = [model.generate(ours, tok, [p], max_new_tokens=12, temperature=0.0)[0] for p in prompts]
    assert batched == single
    # cached greedy decoding equals greedy decoding that recomputes the whole sequence every step
    ids, _ = tok.chat(prompts[1])
    seq = list(ids)
    with torch.no_grad():
        for _ in range(12):
            nxt = int(ours(torch.tensor([seq]))[0, -1].argmax())
            if nxt in tok.stop_ids:
                break
            seq.append(nxt)
    assert tok.decode(seq[len(ids):]).strip() == single[1][0]


def test_sampling_is_seeded_and_top_p_restricts(default):
    ours, tok = default
    a = model.generate(ours, tok, ["Invent a word."], n=3, max_new_tokens=8, temperature=1.0, seed=11)
    b = model.generate(ours, tok, ["Invent a word."], n=3, max_new_tokens=8, temperature=1.0, seed=11)
    assert a == b and len(a) == 1 and len(a[0]) == 3
    logits = torch.tensor([[3.0, 2.0, 1.0, -5.0]])
    p = torch.softmax(logits, -1)[0]
    assert p[0] < 0.7 < p[0] + p[1]  # top_p = 0.7 keeps exactly the first two tokens
    gen = torch.Generator().manual_seed(0)
    draws = {int(model.sample(logits, 1.0, 0.7, gen)) for _ in range(200)}
    assert draws == {0, 1}


# ----------------------------------------------------------------------------- encoder

def test_encoder_matches_bert_mean_pooling():
    encoder = model.load_encoder(None)
    path = model.default_encoder_path()
    bert = transformers.BertModel.from_pretrained(path).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    texts = ["use a brick as a doorstop", "A completely different sentence about the ocean at night.",
             "x", "Ünïcödé and émojis 🧱 " * 3]
    ours = encoder.embed(texts, batch_size=2)
    batch = hf_tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = bert(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    cos = (ours * ref).sum(-1)
    assert cos.min() > 0.9999, cos
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(texts)), atol=1e-5)
