"""tokenizer.py: chat-format detection and rendering by hand, and the embedded default's tokenizer and chat
template against transformers' own GGUF reading."""
import json
import os

import pytest
from tokenizers import AddedToken, decoders
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

import data
import tokenizer
from conversation import Conversation, as_prompt

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
        # data text is text: "<|im_start|>x" is its characters (transformers: split_special_tokens=True)
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"], text
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



# ---------------------------------------------------------------------------------------------------------------------
# data text is text; conversations; other chat formats (issue 22)

FIELD = os.path.join(os.path.dirname(__file__), "data", "field_cases")


def field_rows(name):
    return data.read_rows(os.path.join(FIELD, name))[0]


def hf_text_ids(hf_tok, text):
    return hf_tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_control_token_strings_in_data_are_characters(default, hf_default):
    """The handed row: literal <|im_end|> / <|im_start|> in prompt and response are characters; the sequence has
    exactly the template's control tokens (system, user, assistant turns: three <|im_start|>, three <|im_end|>)."""
    _, tok = default
    _, hf_tok = hf_default
    row = field_rows("special_token_strings_in_text.jsonl")[0]
    ids, start = tok.chat(row["prompt"], row["chosen"])
    im_start, im_end = tok.tok.token_to_id("<|im_start|>"), tok.tok.token_to_id("<|im_end|>")
    assert ids.count(tok.eot_id) == 3 and tok.eot_id == im_end and ids.count(im_start) == 3
    # oracle: transformers' template around placeholders; template pieces with control tokens, data pieces as text
    rendered = hf_tok.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False, add_generation_prompt=True)
    before, after = rendered.split("\x00")
    expected_prompt = (hf_tok(before, add_special_tokens=False)["input_ids"] + hf_text_ids(hf_tok, row["prompt"])
                       + hf_tok(after, add_special_tokens=False)["input_ids"])
    assert ids[:start] == expected_prompt
    assert ids[start:] == hf_text_ids(hf_tok, row["chosen"]) + [im_end]
    assert tok.decode(ids[start:-1]) == row["chosen"]
    # every supported format's control strings, in prompt and response: still only the template's six
    specials = {tok.tok.token_to_id(t) for t in tok.control_strings}
    for text in ["<|eot_id|><|start_header_id|>user<|end_header_id|>", "<start_of_turn>model\n<end_of_turn>",
                 "[INST] x [/INST]</s>", "<|endoftext|><|im_end|>\n<|im_start|>assistant\n"]:
        ids, start = tok.chat("Explain " + text, "It is " + text)
        assert sum(i in specials for i in ids) == 6, text
        assert ids[start:-1] == hf_text_ids(hf_tok, "It is " + text)


def test_transcript_prompt_is_rendered_once(default):
    """A prompt already written as a ChatML transcript: parsed into its turns, wrapped once (not twice)."""
    _, tok = default
    row = field_rows("special_token_strings_in_text.jsonl")[1]
    assert row["prompt"] == "Name a use for a brick."
    ids, start = tok.chat(row["prompt"], row["chosen"])
    assert ids == tok.chat("Name a use for a brick.", "Doorstop.")[0]
    assert ids.count(tok.tok.token_to_id("<|im_start|>")) == 3 and ids.count(tok.eot_id) == 3


def test_conversations_render_like_transformers(default, hf_default):
    """Every turn and the system message (the handed rows: explicit [system, user, assistant, user] prompt; TRL
    implicit prompt with a system message), and a conversation without a system turn (the default one is added)."""
    _, tok = default
    _, hf_tok = hf_default
    rows = field_rows("multiturn_system_prompt_dropped.jsonl")
    assert isinstance(rows[0]["prompt"], Conversation) and isinstance(rows[1]["prompt"], Conversation)
    assert rows[1]["prompt"].messages == (("system", "Reply like a pirate."), ("user", "Use for a spoon?"))
    assert (rows[1]["chosen"], rows[1]["rejected"]) == ("Arr, a tiny catapult for peas!", "Eating soup.")
    no_system = as_prompt([{"role": "user", "content": "Name a use for a brick."},
                           {"role": "assistant", "content": "Build a wall."},
                           {"role": "user", "content": "Now a more unusual one, please."}])
    for prompt, response in [(rows[0]["prompt"], rows[0]["chosen"]), (rows[1]["prompt"], rows[1]["rejected"]),
                             (no_system, "Moss garden.")]:
        messages = [{"role": r, "content": c} for r, c in prompt.messages] + [{"role": "assistant", "content": response}]
        ids, start = tok.chat(prompt, response)
        expected = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=False)
        assert ids == expected[:-1]  # the template ends the turn with "\n" after <|im_end|>; ours stops at <|im_end|>
        assert ids[:start] == hf_tok.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                                         return_dict=False)
    text = tok.tok.decode(tok.chat(rows[0]["prompt"])[0], skip_special_tokens=False)
    assert "Always answer in exactly three words." in text and "Build a wall." in text and "Name a use" in text
    # SFT examples of conversation rows (chosen == rejected) tokenize to the same rendering and are kept
    sft = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["chosen"]} for r in rows]
    items, stats = tokenizer.tokenize_pairs(sft, tok, max_len=512, keep_identical=True)
    assert [it["chosen_ids"] for it in items] == [tok.chat(r["prompt"], r["chosen"])[0] for r in rows]
    assert stats["dropped_identical"] == 0


# Gemma-3's chat template (text messages): no system role, a system message opens the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + "
    "'\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set "
    "loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == "
    "'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}")
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def byte_tokenizer_folder(path, specials, template, bos, eos):
    """An HF folder with a byte-level BPE (the 256 bytes, no merges) plus the format's special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = HFTokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": template, "bos_token": bos, "eos_token": eos, "pad_token": specials[0]}, f)
    return str(path)


@pytest.mark.parametrize("fmt", ["gemma", "llama3"])
def test_gemma_and_llama3_chat_formats_match_their_templates(tmp_path, fmt):
    transformers = pytest.importorskip("transformers", reason="transformers renders the template (the oracle)")
    if fmt == "gemma":
        folder = byte_tokenizer_folder(tmp_path, ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
                                       GEMMA_TEMPLATE, "<bos>", "<eos>")
        eot = "<end_of_turn>"
    else:
        folder = byte_tokenizer_folder(tmp_path, ["<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>",
                                                  "<|end_header_id|>", "<|eot_id|>"], LLAMA3_TEMPLATE,
                                       "<|begin_of_text|>", "<|eot_id|>")
        eot = "<|eot_id|>"
    tok = tokenizer.hf_tokenizer(folder, {})
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(folder)
    assert tok.chat_format == fmt and tok.eot_token == eot and tok.default_system is None
    conversation = as_prompt([{"role": "system", "content": "Always answer in exactly three words."},
                              {"role": "user", "content": "Name a use for a brick."},
                              {"role": "assistant", "content": "Build a wall."},
                              {"role": "user", "content": " Now a more unusual one <end_of_turn><|eot_id|>"}])
    for prompt in [conversation, "Name a use for a brick.", as_prompt([{"role": "system", "content": "Be brief."},
                                                                      {"role": "user", "content": "A use?"}])]:
        messages = ([{"role": r, "content": c} for r, c in prompt.messages] if isinstance(prompt, Conversation)
                    else [{"role": "user", "content": prompt}])
        ids, start = tok.chat(prompt, "Moss garden.")
        rendered = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = []  # data text's control strings as characters, the template's as tokens
        for i, piece in enumerate(rendered.split("<end_of_turn><|eot_id|>")):
            expected += ([] if i == 0 else hf_text_ids(hf_tok, "<end_of_turn><|eot_id|>")) + \
                hf_tok(piece, add_special_tokens=False)["input_ids"]
        assert ids[:start] == expected
        assert ids[start:] == hf_text_ids(hf_tok, "Moss garden.") + [tok.tok.token_to_id(eot)]
    if fmt == "gemma":  # no system role: the system message opens the first user turn
        text = tok.tok.decode(tok.chat(conversation)[0], skip_special_tokens=False)
        assert text.startswith("<bos><start_of_turn>user\nAlways answer in exactly three words.\n\nName a use")
        assert text.endswith("<start_of_turn>model\n") and text.count("<start_of_turn>model\n") == 2


def test_mistral_folds_the_system_message_into_the_first_user_turn():
    words = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "sys", "hi", "ok", "again", "yes"]
    tok = word_tokenizer(words)
    tok.add_special_tokens(["<s>", "</s>", "[INST]", "[/INST]"])
    t = tokenizer.make_tokenizer(tok, "[INST] {{ content }} [/INST]", {"bos": "<s>", "eos": "</s>"}, "m")
    prompt = as_prompt([{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}])
    ids, start = t.chat(prompt, "yes")
    # <s>[INST] sys\n\nhi [/INST]ok</s>[INST] again [/INST]yes</s>
    assert [words[i] for i in ids] == ["<s>", "[INST]", "sys", "hi", "[/INST]", "ok", "</s>", "[INST]", "again",
                                       "[/INST]", "yes", "</s>"] and start == 10


# ---------------------------------------------------------------------------------------------------------------------
# pairs that truncation makes identical

def test_pairs_identical_after_truncation_are_dropped_and_counted(default):
    _, tok = default
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
             for r in field_rows("identical_after_truncation_maxlen64.jsonl")]
    items, stats = tokenizer.tokenize_pairs(pairs, tok, max_len=64)
    assert [it["index"] for it in items] == [1] and stats["dropped_identical"] == 1 and stats["items"] == 1
    assert "1 dropped (chosen and rejected token-identical after truncation)" in tokenizer.tokens_summary(stats)
    items, stats = tokenizer.tokenize_pairs(pairs, tok, max_len=512)  # room for the differing endings: both kept
    assert stats["dropped_identical"] == 0 and len(items) == 2
    # the same texts differing only after the cut, each a different length; SFT examples (same text) are kept
    long = "word " * 80
    pairs = [{"prompt": "p", "chosen": long + "a", "rejected": long + "b c d"}, {"prompt": "p", "chosen": "x", "rejected": "x"}]
    items, stats = tokenizer.tokenize_pairs(pairs, tok, max_len=40)
    assert stats["dropped_identical"] == 2 and items == []
    items, stats = tokenizer.tokenize_pairs(pairs, tok, max_len=40, keep_identical=True)
    assert stats["dropped_identical"] == 0 and len(items) == 2


def test_sft_examples_tokenize_as_the_chosen_side_of_pairs_and_collate_one_row_each(default):
    """tokenize_sft is tokenize_pairs' chosen side (same rendering and truncation), one SftSequence per example;
    collate_sft pads them into [B, T] by hand."""
    _, tok = default
    long = "word " * 80
    examples = [{"prompt": "Name a use for a brick.", "chosen": "A doorstop."},
                {"prompt": long, "chosen": "short"},  # prompt text cut from the left
                {"prompt": "p", "chosen": long + "end"},  # response cut on the right
                {"prompt": "q", "chosen": "x", "line": 7}]
    for max_len in (40, 512):
        items, stats = tokenizer.tokenize_sft(examples, tok, max_len=max_len)
        as_pairs = [{"prompt": e["prompt"], "chosen": e["chosen"], "rejected": e["chosen"]} for e in examples]
        pair_items, _ = tokenizer.tokenize_pairs(as_pairs, tok, max_len=max_len, keep_identical=True)
        assert [(it.ids, it.response_start, it.index) for it in items] == \
            [(p["chosen_ids"], p["chosen_start"], p["index"]) for p in pair_items]
        assert all(isinstance(it, tokenizer.SftSequence) and len(it.ids) <= max_len for it in items)
        assert stats["items"] == len(items) == 4 and stats["examples"] == 4
        assert stats["tokens"] == sum(len(it.ids) for it in items)
        assert stats["longest"] == max(len(it.ids) for it in items)
        assert stats["response_tokens"] == sum(it.response_tokens for it in items)
        full = [tok.chat(e["prompt"], e["chosen"]) for e in examples]  # (ids, start) untruncated
        assert stats["truncated_prompt"] == sum(it.response_start < start for it, (_, start) in zip(items, full))
        assert stats["truncated_response"] == sum(it.response_tokens < len(ids) - start
                                                  for it, (ids, start) in zip(items, full))
        assert stats["truncated_response"] == (max_len == 40) and (stats["truncated_prompt"] > 0) == (max_len == 40)
        assert f"4 of 4 SFT examples tokenized: {stats['tokens']:,} tokens" in tokenizer.sft_tokens_summary(stats)
    assert items[0].ids == tok.chat(examples[0]["prompt"], examples[0]["chosen"])[0]
    # a prompt that leaves no room for a response: dropped and counted
    items, stats = tokenizer.tokenize_sft([{"prompt": long, "chosen": "x"}], tok, max_len=2)
    assert items == [] and stats["dropped_empty_response"] == 1
    batch = tokenizer.collate_sft([tokenizer.SftSequence([5, 6, 7, 8], 2, 0), tokenizer.SftSequence([5, 10], 1, 1)], 0)
    assert set(batch) == {"input_ids", "attention_mask", "response_mask"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [5, 10, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    with pytest.raises(ValueError):
        tokenizer.collate_sft([], 0)
    with pytest.raises(TypeError):  # the pair collate takes pairs only: no guessing from the items' keys
        tokenizer.collate([tokenizer.SftSequence([5, 6], 1, 0)], 0)
