"""tokenizer.py: chat-format detection and rendering by hand, and the embedded default's tokenizer and chat
template against transformers' own GGUF reading."""
import json

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

import tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n"


def word_tokenizer(words):
    tok = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([w for w in words if w.startswith("<|")])
    return tok


def test_chat_format_detected_from_template_else_vocabulary():
    assert tokenizer.detect_chat_format(CHATML, {}) == "chatml"
    assert tokenizer.detect_chat_format("<|start_header_id|>{{ role }}<|end_header_id|>", {}) == "llama3"
    assert tokenizer.detect_chat_format("[INST] {{ content }} [/INST]", {}) == "mistral"
    assert tokenizer.detect_chat_format(None, {"<|im_start|>": 5}) == "chatml"
    assert tokenizer.detect_chat_format(None, {"<|start_header_id|>": 5}) == "llama3"
    assert tokenizer.detect_chat_format(None, {"a": 0}) == "mistral"
    assert tokenizer.default_system_prompt("{{ '" + SMOL_SYSTEM.replace("\n", "\\n") + "' }}") == \
        "You are a helpful AI assistant named SmolLM"
    assert tokenizer.default_system_prompt(CHATML) is None


def test_hf_tokenizer_reads_specials_and_renders_chatml_turns(tmp_path):
    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hi", "there"]
    word_tokenizer(words).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "pad_token": "<unk>"}))
    tok = tokenizer.hf_tokenizer(str(tmp_path), {"eos_token_id": [2, 0]})  # eos from config.json's first id
    assert (tok.chat_format, tok.eos_token, tok.eot_id, tok.pad_id, tok.stop_ids) == ("chatml", "<|im_end|>", 2, 0, {2})
    assert tok.default_system is None and tok.name == tmp_path.name
    ids, start = tok.chat("hi", "there")
    # "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" then "there" and the end of turn
    assert ids == [1, 3, 5, 2, 1, 4, 6, 2] and start == 6
    assert tok.chat("hi") == (ids[:start], start)


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
