"""generate.py: greedy and sampled generation with the KV cache, the shared-prefix pass, the command line."""
import torch

import generate


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
