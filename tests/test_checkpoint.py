"""checkpoint.py against independent references: transformers / peft / gguf as oracles, float64 math, hand cases."""
import json
import math
import os

import numpy as np
import pytest
import torch

import checkpoint
import model
from fakes import hf_logits, tiny_hf_model

transformers = pytest.importorskip("transformers", reason="transformers is the oracle (pip install -r requirements-dev.txt)")

PARAGRAPH = ("The river wound slowly through the valley, past fields of wheat and old stone farmhouses. "
             "In the evening the light turned golden, and the children walked home along the water, "
             "talking about the fish they had seen and the boats that would come in the spring.")


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral", "gemma2", "qwen3"])
def test_logits_match_transformers(kind, tmp_path):
    """23 tokens: past Gemma-2's sliding window of 6 (fakes.TINY_GEMMA2), with left padding too."""
    hf, folder = tiny_hf_model(kind, tmp_path)
    ours, _ = checkpoint.load(folder)
    assert ours.config.qkv_bias == (kind == "qwen2")
    assert ours.config.tie_embeddings == (kind in ("qwen2", "gemma2"))
    assert ours.config.head_dim == (24 if kind in ("gemma2", "qwen3") else 16)
    ids = torch.randint(0, 128, (2, 23), generator=torch.Generator().manual_seed(0))
    assert (ours(ids) - hf_logits(hf, ids)).abs().max() < 1e-4
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding: transformers derives no positions from the mask, so compare the real tokens
    ref = hf_logits(hf, ids[:1, 5:])
    assert (ours(ids, mask)[0, 5:] - ref[0]).abs().max() < 1e-4


def test_gemma2_each_difference_changes_the_logits(tmp_path):
    """The parity above is not vacuous: switching any one Gemma-2 difference off moves the logits well past 1e-4
    (the soft caps are small enough to bend them, the window shorter than the sequence)."""
    hf, folder = tiny_hf_model("gemma2", tmp_path)
    ours, _ = checkpoint.load(folder)
    c = ours.config
    assert (c.norm_offset, c.sandwich_norms, c.mlp_act, c.embed_scale) == (1.0, True, "gelu_tanh", True)
    assert (c.query_pre_attn_scalar, c.attn_softcap, c.final_softcap) == (20, 4.0, 3.0)
    assert (c.sliding_window, c.sliding_layers) == (6, (0, 2))  # transformers' layer_types: even layers slide
    ids = torch.randint(0, 128, (2, 23), generator=torch.Generator().manual_seed(0))
    ref = hf_logits(hf, ids)
    with torch.no_grad():
        assert (ours(ids) - ref).abs().max() < 1e-4
        assert ref.abs().max() < 3.0 and (ours.lm_head(ours.hidden(ids)) - ref).abs().max() > 0.1  # final cap bites
        for field, off in (("attn_softcap", None), ("sliding_layers", ()), ("embed_scale", False),
                           ("scale", None), ("act", "silu")):
            owners = [layer.self_attn if field == "scale" else layer.mlp for layer in ours.layers]
            owners = owners if field in ("scale", "act") else [c]  # per-module copies, or the shared config
            on = [getattr(o, field) for o in owners]
            for o in owners:
                setattr(o, field, off)
            assert (ours(ids) - ref).abs().max() > 1e-2, field
            for o, v in zip(owners, on):
                setattr(o, field, v)
        assert (ours(ids) - ref).abs().max() < 1e-4


@pytest.mark.parametrize("kind", ["llama", "gemma2", "qwen2", "qwen3", "mistral"])
def test_reward_heads_match_transformers(kind, tmp_path):
    """XForSequenceClassification folders: backbone + score head; the reward at each row's last non-padding
    token equals transformers' pooled logit, in batches padded on the right and on the left."""
    hf, folder = tiny_hf_model(kind, tmp_path, head="reward")
    assert json.loads((folder / "config.json").read_text())["architectures"] == [checkpoint.REWARD_HEADS[kind]]
    rm, _, w = checkpoint.load_reward_model(folder)
    assert w.shape == (1, 64)
    gen = torch.Generator().manual_seed(9)
    lengths = [17, 11, 4]
    for side in ("right", "left"):
        ids = torch.zeros(3, 17, dtype=torch.long)  # pad_token_id 0 (the tiny reward configs')
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lengths):
            span = slice(0, n) if side == "right" else slice(17 - n, 17)
            ids[i, span], mask[i, span] = torch.randint(1, 128, (n,), generator=gen), 1
        with torch.no_grad():
            ours = model.last_token_scores(rm, w, ids, mask)
            ref = hf(input_ids=ids, attention_mask=mask).logits.float()
        assert ours.shape == ref.shape == (3, 1)
        assert (ours - ref).abs().max() < 1e-4, (side, ours, ref)
        assert ref.std() > 1e-2  # rows differ: a wrong pooling position would show


def test_reward_model_errors_name_the_folder(tmp_path):
    _, folder = tiny_hf_model("qwen3", tmp_path)  # a causal LM: no score head
    with pytest.raises(model.ModelError, match=f"{folder}: no `score.weight`.*Gemma2ForSequenceClassification"):
        checkpoint.load_reward_model(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["Qwen3ForTokenClassification"]}))
    with pytest.raises(model.ModelError, match="config.json: architectures 'Qwen3ForTokenClassification' is not "
                                               "supported for model_type 'qwen3'"):
        checkpoint.load(folder)


def test_sharded_checkpoint_and_llama3_rope_scaling(tmp_path):
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    hf, folder = tiny_hf_model("llama", tmp_path, shard=True, rope_parameters=rope, max_position_embeddings=128)
    assert len(list(folder.glob("*.safetensors"))) > 1, "the oracle should have written several shards"
    ours, _ = checkpoint.load(folder)
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
    ours, _ = checkpoint.load(folder)
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


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "gemma2", "qwen3"])
def test_save_loads_in_transformers(kind, tmp_path):
    hf, folder = tiny_hf_model(kind, tmp_path)
    ours, tok = checkpoint.load(folder)
    checkpoint.save(ours, tok, tmp_path / "saved")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert type(back).__name__ == checkpoint.ARCHITECTURES[kind]
    ids = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(2))  # past Gemma-2's window
    assert (hf_logits(back, ids) - hf_logits(hf, ids)).abs().max() < 1e-4
    again, _ = checkpoint.load(tmp_path / "saved")
    assert (again(ids) - ours(ids)).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3"])  # Gemma-2: the trained test below
def test_lora_merge_and_peft_adapter(kind, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is the adapter oracle (requirements-dev.txt)")
    hf, folder = tiny_hf_model(kind, tmp_path)
    ours, tok = checkpoint.load(folder)
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
    checkpoint.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=folder)
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


def test_gemma2_lora_trained_here_loads_in_peft(tmp_path):
    """LoRA on all seven linear layers of Gemma-2, trained two steps on log pi(y|x) through the soft-capped output
    (model.softcapped_logprobs); the adapter loads in peft with our logits, and the merged save in transformers."""
    peft = pytest.importorskip("peft", reason="peft is the adapter oracle (requirements-dev.txt)")
    hf, folder = tiny_hf_model("gemma2", tmp_path)
    ours, tok = checkpoint.load(folder)
    torch.manual_seed(3)
    params = model.add_lora(ours, rank=4, alpha=8)
    assert len(params) == 3 * 7 * 2
    opt = torch.optim.Adam(params, lr=0.05)
    ids = torch.randint(0, 128, (2, 19), generator=torch.Generator().manual_seed(4))
    mask, resp = torch.ones_like(ids), torch.zeros_like(ids)
    resp[:, 8:] = 1
    ours.train()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = -model.sequence_logps(ours, ids, mask, resp)[0].mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1  # it trained (the B matrices left zero)
    ours.eval()
    with torch.no_grad():
        adapted = ours(ids)
    checkpoint.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=folder)
    peft_model = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids).logits
        assert (peft_logits - adapted).abs().max() < 1e-4
    checkpoint.save(ours, tok, tmp_path / "merged")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert (hf_logits(back, ids) - adapted).abs().max() < 1e-4


def test_lora_save_writes_merged_weights(tmp_path):
    _, folder = tiny_hf_model("mistral", tmp_path)
    ours, tok = checkpoint.load(folder)
    model.add_lora(ours, rank=2, alpha=4, targets=("q_proj", "down_proj"))
    with torch.no_grad():
        for _, m in model.lora_modules(ours):
            m.lora_B.weight.normal_(0, 0.3)
    checkpoint.save(ours, tok, tmp_path / "merged")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.randint(0, 128, (1, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (hf_logits(back, ids) - ours(ids)).abs().max() < 1e-4


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
        ours = checkpoint.dequantize(kind, list(w.shape), raw.tobytes())
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6, err_msg=name)
        assert np.abs(ours - w).max() < (0.5 if name.startswith("Q4") else 0.05), name


GGUF_PARTS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
              "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
GGUF_PARTS_GEMMA2 = {**GGUF_PARTS, "post_attention_layernorm": "post_attention_norm",
                     "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"}


def write_gguf(gguf, hf, path, arch):
    """A GGUF file of an HF model as llama.cpp's convert_hf_to_gguf writes it: llama's q/k rows pairwise
    interleaved, Gemma's norm gains stored as 1 + g, the Gemma-2 hyperparameters in their metadata keys."""
    c = hf.config
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_context_length(256)
    if arch in ("gemma2", "qwen3"):
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(c.attn_logit_softcapping)
        writer.add_final_logit_softcapping(c.final_logit_softcapping)
        writer.add_sliding_window(c.sliding_window)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    writer.add_token_types([1] * c.vocab_size)
    writer.add_token_merges([])

    def permute(w, n_head):  # llama.cpp's convert_hf_to_gguf order: pairwise-interleaved rotary rows
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = GGUF_PARTS_GEMMA2 if arch == "gemma2" else GGUF_PARTS
    for k, v in hf.state_dict().items():
        v = v.float().numpy()
        if arch == "gemma2" and k.endswith("norm.weight"):
            v = v + 1
        if k in names:
            if not (k == "lm_head.weight" and c.tie_word_embeddings):
                writer.add_tensor(names[k], v)
            continue
        layer, rest = k.split(".")[2], ".".join(k.split(".")[3:-1])
        if arch == "llama" and rest == "self_attn.q_proj":
            v = permute(v, c.num_attention_heads)
        if arch == "llama" and rest == "self_attn.k_proj":
            v = permute(v, c.num_key_value_heads)
        writer.add_tensor(f"blk.{layer}.{parts[rest]}.{k.rsplit('.', 1)[1]}", np.ascontiguousarray(v))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "qwen3"])
def test_gguf_file_gives_the_hf_logits(arch, tmp_path):
    """A tiny GGUF written by the gguf package in llama.cpp's layout (llama: q/k rows permuted; qwen2: q/k/v
    biases; gemma2: norms 1 + g, its scale query_pre_attn_scalar = head_dim as llama.cpp assumes below 27B)
    gives HF's logits."""
    gguf = pytest.importorskip("gguf")
    extra = {"query_pre_attn_scalar": 24} if arch == "gemma2" else {}
    hf, _ = tiny_hf_model(arch, tmp_path, **extra)
    ours, _ = checkpoint.load(write_gguf(gguf, hf, str(tmp_path / "tiny.gguf"), arch))
    if arch == "gemma2":
        c = ours.config
        assert (c.query_pre_attn_scalar, c.attn_softcap, c.final_softcap, c.sliding_window) == (24, 4.0, 3.0, 6)
    ids = torch.randint(0, 128, (2, 13), generator=torch.Generator().manual_seed(7))
    assert (ours(ids) - hf_logits(hf, ids)).abs().max() < 1e-4


def test_gguf_of_another_architecture_names_the_supported_ones(tmp_path):
    gguf = pytest.importorskip("gguf")
    hf, _ = tiny_hf_model("llama", tmp_path)
    path = write_gguf(gguf, hf, str(tmp_path / "x.gguf"), "llama")
    raw = open(path, "rb").read().replace(b"llama", b"phi3\0", 1)  # general.architecture's value, same length
    (tmp_path / "phi.gguf").write_bytes(raw)
    with pytest.raises(model.ModelError, match="architecture 'phi3.*' is not supported \\(supported: llama, mistral, "
                                               "qwen2, gemma2, qwen3\\)"):
        checkpoint.load(tmp_path / "phi.gguf")


def test_broken_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTGGUF" + b"\0" * 64)
    with pytest.raises(model.ModelError, match="bad.gguf: not a GGUF file"):
        checkpoint.load(bad)
    with pytest.raises(model.ModelError, match="no such file"):
        checkpoint.load(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(model.ModelError, match="no config.json"):
        checkpoint.load(tmp_path / "empty_dir")
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(open(checkpoint.default_model_path(), "rb").read(2_000_000))
    with pytest.raises(model.ModelError, match="runs past the end"):
        checkpoint.load(truncated)


# ----------------------------------------------------------------------------- the embedded default

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


# ----------------------------------------------------------------------------- LoRA adapter folders

def trained_lora(folder, seed=3, **kw):
    """The checkpoint in folder with LoRA added and its A, B drawn at random (as after training)."""
    m, tok = checkpoint.load(folder)
    torch.manual_seed(seed)
    params = model.add_lora(m, **kw)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.3)
    return m, tok


def test_adapter_folder_loads_as_its_base_plus_the_adapter(tmp_path):
    _, folder = tiny_hf_model("llama", tmp_path)
    trained, tok = trained_lora(folder, rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"))
    checkpoint.save_adapter(trained, tmp_path / "adapter", base_model_name_or_path=folder)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == os.path.abspath(folder)
    back, back_tok = checkpoint.load(tmp_path / "adapter")
    assert back.lora == trained.lora and len(model.lora_modules(back)) == 2 * 3
    ids = torch.randint(0, 128, (2, 15), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert torch.equal(back(ids), trained(ids))  # the same weights, the same computation
        with model.lora_disabled(back):
            base, _ = checkpoint.load(folder)
            assert torch.equal(back(ids), base(ids))
    assert back_tok.encode("w3 w7") == tok.encode("w3 w7")


def test_adapter_of_the_embedded_default_records_it_and_loads_back(tmp_path):
    trained, _ = trained_lora(None, rank=2, alpha=4, targets=("q_proj",))
    checkpoint.save_adapter(trained, tmp_path / "adapter")  # no base given: the embedded default
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == checkpoint.DEFAULT_MODEL_NAME
    back, _ = checkpoint.load(tmp_path / "adapter")
    ids = torch.tensor([[1, 504, 3458, 314, 2114, 30]])
    with torch.no_grad():
        assert torch.equal(back(ids), trained(ids))


def test_adapter_without_a_usable_base_says_which_model_to_pass(tmp_path):
    _, folder = tiny_hf_model("mistral", tmp_path)
    trained, tok = trained_lora(folder, rank=2, alpha=4)
    out = tmp_path / "out"  # crpo.py's layout: the merged model in out/, the adapter in out/adapter
    checkpoint.save(trained, tok, out)
    checkpoint.save_adapter(trained, out / "adapter", base_model_name_or_path=folder)
    cfg_path = out / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for base, message in ((None, "no base_model_name_or_path"), (str(tmp_path / "gone"), "is not on this machine")):
        cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": base}))
        with pytest.raises(model.ModelError, match=f"{message}.*--model {out}") as e:
            checkpoint.load(out / "adapter")
        assert "\n" not in str(e.value)
    cfg_path.write_text(json.dumps({**cfg, "target_modules": ["q_proj"]}))  # weights for all seven targets
    with pytest.raises(model.ModelError, match="does not fit its base"):
        checkpoint.load(out / "adapter")
