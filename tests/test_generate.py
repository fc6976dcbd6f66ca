"""generate.py: greedy and sampled generation with the KV cache, the shared-prefix pass, the command line."""
import pytest
import torch

import checkpoint
import generate
from fakes import ByteTokenizer, tiny_hf_model, tiny_model


def test_default_greedy_answer_names_paris(default):
    ours, tok = default
    [[answer]] = generate.generate(ours, tok, ["What is the capital of France?"], max_new_tokens=16, temperature=0.0)
    assert "Paris" in answer


def test_batched_generation_equals_one_by_one_and_cache_equals_recompute(default):
    ours, tok = default
    prompts = ["What is the capital of France?", "Give one creative use for a paperclip.", "Say hi."]
    batched = generate.generate(ours, tok, prompts, max_new_tokens=12, temperature=0.0)
    single = [generate.generate(ours, tok, [p], max_new_tokens=12, temperature=0.0)[0] for p in prompts]
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
    a = generate.generate(ours, tok, ["Invent a word."], n=3, max_new_tokens=8, temperature=1.0, seed=11)
    b = generate.generate(ours, tok, ["Invent a word."], n=3, max_new_tokens=8, temperature=1.0, seed=11)
    assert a == b and len(a) == 1 and len(a[0]) == 3
    logits = torch.tensor([[3.0, 2.0, 1.0, -5.0]])
    p = torch.softmax(logits, -1)[0]
    assert p[0] < 0.7 < p[0] + p[1]  # top_p = 0.7 keeps exactly the first two tokens
    gen = torch.Generator().manual_seed(0)
    draws = {int(generate.sample(logits, 1.0, 0.7, gen)) for _ in range(200)}
    assert draws == {0, 1}


# ----------------------------------------------------------------------------- KV cache and shared prefix (tiny model)

def test_new_kv_cache_shapes_follow_the_model():
    m = tiny_model(0).to(torch.float64)
    cache = generate.new_kv_cache(m, 3, 11)
    c = m.config
    assert cache["start"] == 0 and len(cache["k"]) == len(cache["v"]) == c.n_layers
    assert all(t.shape == (3, c.n_kv_heads, 11, c.head_dim) and t.dtype == torch.float64 for t in cache["k"] + cache["v"])


def test_shared_prefix_hidden_equals_one_pass_per_sequence():
    m = tiny_model(0)
    seqs = [[1, 5, 6, 7, 2, 9, 9, 3], [1, 5, 6, 7, 2, 8, 3], [1, 5, 6, 7, 2, 10, 11, 12, 13, 3], [1, 5, 6, 7, 2, 3]]
    stats = {"lm_tokens": 0, "attention_pairs": 0}
    seen = []
    for idx, hidden, lengths in generate.shared_prefix_hidden(m, seqs, 3, stats):
        assert lengths.tolist() == [len(seqs[i]) for i in idx]
        for row, i in enumerate(idx):
            with torch.no_grad():
                ref = m.hidden(torch.tensor([seqs[i]]))[0]
            # the same causal attention summed in another order: a few tens of float32 steps at its magnitude
            assert (hidden[row, :len(seqs[i])] - ref).abs().max() <= 64 * 2.0 ** -23 * ref.abs().max()
            seen.append(i)
    assert sorted(seen) == [0, 1, 2, 3]
    P = 5  # [1, 5, 6, 7, 2] runs once
    assert stats["lm_tokens"] == P + sum(len(s) - P for s in seqs)
    assert stats["attention_pairs"] == P * (P + 1) // 2 + sum(sum(range(P + 1, len(s) + 1)) for s in seqs)


def test_shared_prefix_keeps_one_token_of_a_sequence_that_is_all_prefix():
    m = tiny_model(0)
    seqs = [[1, 5, 6], [1, 5, 6, 7, 8]]  # the first is a prefix of the second: P = 2, not 3
    stats = {"lm_tokens": 0, "attention_pairs": 0}
    out = {i: h[r, :len(seqs[i])] for idx, h, _ in generate.shared_prefix_hidden(m, seqs, 4, stats) for r, i in enumerate(idx)}
    assert stats["lm_tokens"] == 2 + 1 + 3
    for i, s in enumerate(seqs):
        with torch.no_grad():
            ref = m.hidden(torch.tensor([s]))[0]
        assert (out[i] - ref).abs().max() <= 64 * 2.0 ** -23 * ref.abs().max()


# ----------------------------------------------------------------------------- Gemma-2: sliding window, soft caps

def recompute_generation(m, tok, prompt, steps, temperature, gen):
    """Reference decoding: the whole sequence through m every step (no KV cache), sampled as generate samples."""
    seq = tok.chat(prompt)[0]
    start = len(seq)
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(generate.sample(m(torch.tensor([seq]))[:, -1], temperature, 1.0, gen))
            if nxt in tok.stop_ids:
                break
            seq.append(nxt)
    return seq[start:]


class IdsTokenizer(ByteTokenizer):
    """ByteTokenizer whose decode spells out every id: texts compare token for token."""

    def decode(self, ids):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("kind", ["gemma2", "llama", "mistral", "qwen2", "qwen3"])
def test_cached_generation_equals_recompute(kind, tmp_path):
    """KV-cache decoding on tiny transformers-written checkpoints (Gemma-2: window 6, soft caps): left-padded
    step-by-step logits equal one full pass over each sequence, and sampled generation (which reads the
    soft-capped logits) equals recomputing the whole sequence every step, for prompts shorter and longer than
    Gemma-2's window."""
    pytest.importorskip("transformers", reason="transformers writes the tiny checkpoint (requirements-dev.txt)")
    _, folder = tiny_hf_model(kind, tmp_path, vocab_size=256)
    m, _ = checkpoint.load(folder)
    tok = IdsTokenizer()
    prompts = ["hello there friend", "ok", "a brick, a wall"]
    if kind == "gemma2":
        assert len(tok.chat("ok")[0]) < m.config.sliding_window == 6 < len(tok.chat(prompts[0])[0])  # both sides
    # teacher-forced: generate's loop (left padding, a growing mask, one token a step) on fixed continuations
    seqs = [tok.chat(p)[0] for p in prompts]
    steps, T = 12, max(len(s) for s in seqs)
    cont = torch.randint(4, 256, (3, steps), generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T + steps, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):], mask[i, T - len(s):T] = torch.tensor(s), 1
    cache = generate.new_kv_cache(m, 3, T + steps)
    with torch.no_grad():
        step_logits = [m.logits(m.hidden(ids, mask[:, :T], cache)[:, -1])]
        for t in range(steps - 1):
            cache["start"] = T + t
            mask[:, T + t] = 1
            step_logits.append(m.logits(m.hidden(cont[:, t:t + 1], mask[:, :T + t + 1], cache)[:, -1]))
        for i, s in enumerate(seqs):
            full = m(torch.cat([torch.tensor(s), cont[i, :steps - 1]])[None])[0, len(s) - 1:]
            assert (torch.stack([z[i] for z in step_logits]) - full).abs().max() < 1e-4
    lengths = []
    for prompt in prompts:
        for seed in (0, 1):
            [[sampled]] = generate.generate(m, tok, [prompt], max_new_tokens=12, temperature=1.0, seed=seed)
            gen = torch.Generator().manual_seed(seed)
            assert sampled == tok.decode(recompute_generation(m, tok, prompt, 12, 1.0, gen)).strip()
            lengths.append(len(sampled.split()))
    assert min(lengths) > 6  # every sample went on past the window


# ----------------------------------------------------------------------------- the command line

def test_cli_prints_what_generate_returns_and_errors_in_one_line(tmp_path, capsys):
    pytest.importorskip("transformers", reason="transformers writes the tiny checkpoint (requirements-dev.txt)")
    _, folder = tiny_hf_model("qwen2", tmp_path)
    m, tok = checkpoint.load(folder)
    prompts = ["w3 w4", "w5"]
    want = generate.generate(m, tok, prompts, n=2, max_new_tokens=4, temperature=0.0)
    assert generate.main(["--model", str(folder), *prompts, "--n", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    for prompt, texts in zip(prompts, want):
        assert f"\n> {prompt}\n" + "".join(f"  {t}\n" for t in texts) in out
    assert generate.main(["--model", str(tmp_path / "missing"), "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing: no such file or folder" in err and "\n" not in err
    for flags, message in ((["--n", "0"], "--n must be >= 1"), (["--top-p", "0"], "--top-p must be in (0, 1]"),
                           (["--temperature", "-1"], "--temperature must be a number >= 0"),
                           (["--device", "nonsense"], "is not a device")):
        with pytest.raises(SystemExit) as e:
            generate.main(flags)
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate.main(["--help"])
    assert "(default: 48)" in capsys.readouterr().out  # --max-new-tokens: help shows defaults
