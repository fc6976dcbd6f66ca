"""conversation.py: prompts as message lists, rendered transcripts parsed into turns, and prompt_key."""
import copy
import pickle

import pytest

from conversation import Conversation, PromptError, as_prompt, by_prompt_key, parse_transcript, prompt_key


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_message_lists_keep_every_turn_and_one_user_turn_is_text():
    prompt = as_prompt(msgs(("system", "Be brief."), ("user", "A use?"), ("assistant", "Wall."), ("user", "Another?")))
    assert isinstance(prompt, Conversation)
    assert prompt.messages == (("system", "Be brief."), ("user", "A use?"), ("assistant", "Wall."), ("user", "Another?"))
    assert prompt == "System: Be brief.\n\nUser: A use?\n\nAssistant: Wall.\n\nUser: Another?"
    assert as_prompt(msgs(("user", "A use?"))) == "A use?" and type(as_prompt(msgs(("user", "A use?")))) is str
    assert as_prompt([{"role": "user", "content": [{"type": "text", "text": "A "}, {"type": "text", "text": "use?"}]}]) \
        == "A use?"
    for p in (pickle.loads(pickle.dumps(prompt)), copy.deepcopy(prompt)):
        assert p == prompt and p.messages == prompt.messages


@pytest.mark.parametrize("messages, match", [
    (msgs(("user", "a"), ("assistant", "b")), "ends with an assistant turn"),
    (msgs(("user", "a"), ("system", "s"), ("user", "b")), "message 1 is 'system' where 'assistant' was expected"),
    (msgs(("user", "a"), ("user", "b")), "message 1 is 'user' where 'assistant'"),
    (msgs(("tool", "a")), "role 'tool'"),
    (msgs(("user", "  ")), "message 0 \\(user\\) is empty"),
    ([{"role": "user"}], "message 0 must be"),
    ([], "empty list"),
])
def test_conversations_that_cannot_be_rendered_are_refused(messages, match):
    with pytest.raises(PromptError, match=match):
        as_prompt(messages)


def test_rendered_transcripts_are_parsed_into_turns():
    # ChatML (the handed row), with and without the open assistant header; Llama-3; Gemma; Mistral
    assert as_prompt("<|im_start|>user\nName a use for a brick.<|im_end|>\n<|im_start|>assistant\n") == \
        "Name a use for a brick."
    chatml = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nA use?<|im_end|>\n<|im_start|>assistant\n"
              "Wall.<|im_end|>\n<|im_start|>user\nAnother?<|im_end|>\n")
    expected = (("system", "Be brief."), ("user", "A use?"), ("assistant", "Wall."), ("user", "Another?"))
    assert as_prompt(chatml).messages == expected
    llama3 = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>"
              "user<|end_header_id|>\n\nA use?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nWall.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nAnother?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert as_prompt(llama3).messages == expected
    gemma = ("<bos><start_of_turn>user\nA use?<end_of_turn>\n<start_of_turn>model\nWall.<end_of_turn>\n"
             "<start_of_turn>user\nAnother?<end_of_turn>\n<start_of_turn>model\n")
    assert as_prompt(gemma).messages == expected[1:]
    assert as_prompt("<s>[INST] A use? [/INST] Wall.</s>[INST] Another? [/INST]").messages == expected[1:]
    # markup strings inside ordinary text are text
    text = "What does the marker <|im_end|> mean in a chat log?"
    assert parse_transcript(text) is None and as_prompt(text) == text


@pytest.mark.parametrize("text", ["<|im_start|>user\nunterminated", "<|im_start|>user\nA<|im_end|>\ntrailing text",
                                  "<start_of_turn>user\nA", "[INST] no end", "<|im_start|>user\nA<|im_end|>\n"
                                  "<|im_start|>assistant\nB<|im_end|>\n"])
def test_transcripts_that_do_not_parse_are_refused_in_one_line(text):
    with pytest.raises(PromptError) as e:
        as_prompt(text)
    assert "\n" not in str(e.value)


def test_prompt_key_is_one_definition_of_the_same_prompt():
    same = ["Name a use for a brick.", "Name a use for a brick. ", "  Name a use for a brick.\n",
            "Name a  use for\ta brick.", "Name a use for a brick.\r\n"]
    assert len({prompt_key(p) for p in same}) == 1
    assert prompt_key("caf\u00e9") == prompt_key("cafe\u0301")  # NFC
    assert prompt_key("Name a use for a brick.") != prompt_key("Name a use for a brick!")
    assert prompt_key(as_prompt(msgs(("user", "A use? ")))) == prompt_key("A use?")


def test_every_grouping_site_sees_one_prompt(tmp_path, monkeypatch):
    """One prompt written four ways (trailing space, leading newline, doubled space, as a one-turn message list) is
    one group for pairing, splits, duplicates, score.py's groups and populations, originality and eval."""
    import json

    import data
    import eval as evaluation
    import flags
    import originality
    import pairs
    import score
    import splits

    spellings = ["Name a use for a brick.", "Name a use for a brick. ", "\nName a use for a brick.",
                 "Name a use  for a brick.", [{"role": "user", "content": "Name a use for a brick."}]]
    path = tmp_path / "rows.jsonl"
    with open(path, "w") as f:
        for i, prompt in enumerate(spellings):
            f.write(json.dumps({"prompt": prompt, "response": f"answer {i}", "score": float(i)}) + "\n")
        f.write(json.dumps({"prompt": "Name a use for a kettle.", "response": "tea", "score": 1.0}) + "\n")
        f.write(json.dumps({"prompt": "Name a use for a brick.  ", "response": "answer 0 ", "score": 3.0}) + "\n")
    rows, report = data.read_rows(str(path))
    assert report.prompts == 2 and report.duplicates_merged == 1 and rows[0]["score"] == 1.5  # (0 + 3) / 2
    built, stats = data.build_pairs(rows, max_pairs_per_response=None)
    assert stats["prompts"] == 2 and len(built) == 10  # 5 answers to one prompt: 10 pairs
    train, val = splits.split_by_prompt(built, 0.0, seed=0)
    assert len({p["prompt"] for p in built}) == 1 and len(train) == 10
    args = flags.parse_args(["--data", str(path), "--min-margin", "0", "--max-pairs-per-response", "0",
                             "--val-frac", "0.5", "--max-val-pairs", "0"])
    _, _, population = pairs.load_pairs(args, lambda *a: None)
    assert sorted(len(v) for v in population.values()) == [1, 5]
    seen = []

    def groups_scored(groups, dims, **kw):
        seen.extend(groups)
        return [{"diversity": [0.5] * len(g["responses"])} for g in groups], {}

    monkeypatch.setattr(score, "score_groups", groups_scored)
    score.score_rows(rows, ["diversity"])
    assert sorted(len(g["responses"]) for g in seen) == [1, 5] and all("diversity" in r for r in rows)
    assert len(by_prompt_key({s if isinstance(s, str) else "Name a use for a brick.": ["x"] for s in spellings})) == 1
    assert len(originality.group_rows(rows)) == 2
    prompts, reference = evaluation.read_prompts(rows)
    assert len(prompts) == 2 and sorted(len(v) for v in reference.values()) == [1, 5]
    assert len(evaluation.preference_pairs(rows, prompts[:1], min_margin=0.5)) == 10
