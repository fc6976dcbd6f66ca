"""tokenizer.py: the embedded default's tokenizer and chat template against transformers' own GGUF reading."""
import pytest

pytest.importorskip("transformers", reason="transformers is the oracle (pip install -r requirements-dev.txt)")


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
