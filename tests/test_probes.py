"""Tests for probes.py: every kind is generated, seeded, from its style's own building blocks (training and
held-out probes share no text), and training negatives come only from the prompts they are given."""
import numpy as np
import pytest

import probes
from measures import word_tokens

GROUPS = {  # {prompt: (answers, scores, task)}
    "Suggest one unusual, creative use for this object: brick.": (
        ["build a tiny house for a mouse", "doorstop", "grind it into red paint powder"], [1, 2, 3], "Alternate Uses"),
    "Suggest one unusual, creative use for this object: sock.": (
        ["a puppet for a play", "a pencil case"], [3, 2], "Alternate Uses"),
    "Name one unusual, creative example of a thing that fits this description: red.": (
        ["a fire truck", "the planet mars at dawn"], [1, 3], "Instances"),
    "Complete this sentence in an unusual, creative way: At a sleepover we ...": (
        ["built a blanket fort on the roof", "ate cereal"], [3, 1], "Sentence Completion"),
}
BRICK, SOCK, RED, SLEEP = GROUPS


def test_every_kind_in_both_styles_is_nonempty_and_seeded():
    for style in probes.STYLES:
        for kind in probes.KINDS:
            make = lambda seed: probes.make_probes(np.random.default_rng(seed), kind, 20, prompt=BRICK,  # noqa: E731
                                                   own_answers=GROUPS[BRICK][0], other_answers=GROUPS[SOCK][0] * 10,
                                                   style=style)
            a, b = make(0), make(0)
            assert a == b and all(t.strip() for t in a)
            assert len(a) == 20


def test_train_and_heldout_probes_share_no_text():
    """Held-out probes are built from other syllables, words, templates and phrases than training negatives."""
    for kind in ("gibberish", "random_words", "unrelated", "generic", "ramble"):
        made = {style: set(probes.make_probes(np.random.default_rng(1), kind, 300, prompt=BRICK, style=style))
                for style in probes.STYLES}
        assert not made["train"] & made["heldout"], kind
    train_words = {w for t in probes.make_probes(np.random.default_rng(2), "random_words", 300) for w in t.split()}
    held_words = {w for t in probes.make_probes(np.random.default_rng(2), "random_words", 300, style="heldout")
                  for w in t.split()}
    assert not train_words & held_words


def test_shuffled_keeps_the_words_of_an_answer_in_another_order():
    rng = np.random.default_rng(3)
    for t in probes.make_probes(rng, "shuffled", 30, own_answers=GROUPS[BRICK][0]):
        source = [a for a in GROUPS[BRICK][0] if sorted(word_tokens(a)) == sorted(t.split())]
        assert source and t.split() != word_tokens(source[0])


def test_prompt_subject():
    assert probes.prompt_subject(BRICK) == "the brick"
    assert probes.prompt_subject("Write a poem about the sea") == "it"


def test_training_negatives_use_only_the_given_prompts():
    """CV honesty: answers to a prompt outside `prompts` never become another prompt's negative."""
    train = [BRICK, RED, SLEEP]  # SOCK held out
    held = set(GROUPS[SOCK][0])
    for p in train:
        neg = probes.training_negatives(0, p, GROUPS, train, 40)
        assert set(neg) == set(probes.KINDS)
        others = {t for q in train if q != p for t in GROUPS[q][0]}
        assert set(neg["other_prompt"]) <= others and not set(neg["other_prompt"]) & set(GROUPS[p][0])
        assert not {t for ts in neg.values() for t in ts} & held
        vocab = {w for q in train if q != p for t in GROUPS[q][0] for w in word_tokens(t)}
        assert {w for t in neg["random_words"] for w in t.split()} <= vocab
    # half of other_prompt comes from the same task while it lasts (sock's two answers), the rest from others
    texts = probes.training_negatives(0, BRICK, GROUPS, list(GROUPS), 10)["other_prompt"]
    assert set(texts[:2]) == set(GROUPS[SOCK][0]) and not set(texts[2:]) & set(GROUPS[SOCK][0])
    assert len(texts) == 2 + 4  # sock's 2, then all 4 answers of the other tasks (8 wanted)


def test_kinds_that_do_not_depend_on_the_fold_repeat_across_folds():
    """An int seed gives each (prompt, kind) its own stream: gibberish etc. are the same texts in every fold
    (their embeddings are computed once)."""
    a = probes.training_negatives(5, BRICK, GROUPS, [BRICK, SOCK], 8)
    b = probes.training_negatives(5, BRICK, GROUPS, [BRICK, RED, SLEEP], 8)
    for kind in ("gibberish", "unrelated", "generic", "ramble", "shuffled"):
        assert a[kind] == b[kind]


def test_unknown_kind_or_style_is_a_clear_error():
    with pytest.raises(ValueError, match="probe kind"):
        probes.make_probes(np.random.default_rng(0), "poems", 1)
    with pytest.raises(ValueError, match="probe style"):
        probes.make_probes(np.random.default_rng(0), "generic", 1, style="test")
