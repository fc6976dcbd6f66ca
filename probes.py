"""Probe answers that human raters would score lowest: generators of non-answers and off-topic answers.

A creativity score that rewards rarity rewards nonsense too (nothing is rarer than gibberish). These
generators make such answers for a prompt, so that the originality scorer can be trained to rate them
low (originality.py, as negatives), the relevance scorer can learn what is off-topic (relevance.py), and
`python -m experiments.probe_scores` can measure which scores can be gamed. Kinds:

    gibberish       made-up words and keyboard mashes                      ("blorft vemmick zanu")
    random_words    real words in random order, no sentence                ("window seven carrot loudly")
    shuffled        the words of a real answer to this prompt, shuffled    (an answer turned to word salad)
    unrelated       fluent text about something else                       (the stock market, the weather)
    other_prompt    a real answer to another prompt (same task included)   (pass `other_answers`)
    generic         non-answers                                            ("idk", "nothing comes to mind")
    ramble          vague text that names no idea                          ("you could use it for many things")

Every kind has two disjoint sets of building blocks (syllables, word lists, templates, phrases):
style="train" for training negatives, style="heldout" for measuring, so a scorer is never measured on the
instances it was trained to push down. The first five kinds are off-topic (OFF_TOPIC): no answer to
the prompt. Texts are generated from a numpy Generator, so a seed gives the same probes.
"""
import zlib

import numpy as np

from measures import word_tokens

KINDS = ("gibberish", "random_words", "shuffled", "unrelated", "other_prompt", "generic", "ramble")
OFF_TOPIC = ("gibberish", "random_words", "unrelated", "other_prompt")  # what the relevance gate must catch
STYLES = ("train", "heldout")

_SYLLABLES = {
    "train": (["b", "bl", "d", "f", "fl", "g", "gr", "k", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "v", "z"],
              ["a", "e", "i", "o", "u", "ou", "ee"], ["", "", "n", "rt", "ck", "x", "m", "sh"]),
    "heldout": (["c", "ch", "h", "j", "qu", "sk", "sn", "th", "tw", "w", "wr", "y", "x", "kr"],
                ["a", "ai", "e", "o", "oo", "y", "ea"], ["", "", "b", "ff", "g", "lp", "nd", "zz"]),
}
_KEYBOARD = {"train": "qwertyuiop", "heldout": "asdfghjklzxcvbnm"}

_WORDS = {  # random real words: common English, no topic
    "train": ("apple river seven quietly window purple mountain run table sing blue carrot loudly paper ocean "
              "green fast yesterday music horse bright tomorrow hidden cold bread moon jump letter shallow orange "
              "village silver kettle dream fence thunder gentle hammer cloud yellow garden simple broken winter "
              "candle basket ladder lemon tiger slowly forest ribbon marble engine").split(),
    "heldout": ("banana triangle whisper copper north seldom harbor velvet eleven puzzle frozen cabinet desert "
                "violin gravel sunrise noble pocket tunnel wander crimson pillow anchor rapid meadow lantern "
                "quarter sticky ginger mirror feather planet hollow wheat saddle orbit timber cactus dusty swift "
                "pepper canyon echo mango tulip falcon rusty blanket").split(),
}

_UNRELATED = {  # (template, slot lists) of fluent text about other things
    "train": [
        ("The stock market {moved} {pct} percent on {day} as investors worried about {worry}.",
         {"moved": ["fell", "rose", "dropped", "climbed"], "pct": ["2", "3", "1.5", "4"],
          "day": ["Monday", "Tuesday", "Friday"], "worry": ["interest rates", "inflation", "oil prices", "earnings"]}),
        ("Tomorrow will be {weather} in the {part} with temperatures around {deg} degrees.",
         {"weather": ["cloudy", "sunny", "rainy", "windy"], "part": ["morning", "afternoon", "evening"],
          "deg": ["12", "20", "25", "8"]}),
        ("To reset your {device}, hold the power button for {n} seconds and then {step}.",
         {"device": ["router", "phone", "laptop", "printer"], "n": ["10", "30", "5"],
          "step": ["wait for the light to blink", "sign in again", "restart the app"]}),
        ("Preheat the oven to {deg} degrees and bake the {food} for {n} minutes.",
         {"deg": ["180", "200", "350"], "food": ["chicken", "bread", "cookies", "potatoes"], "n": ["20", "45", "12"]}),
        ("The {team} won the {game} after a late goal in the {period}.",
         {"team": ["home team", "visitors", "city club"], "game": ["match", "final", "derby"],
          "period": ["second half", "last minute", "extra time"]}),
    ],
    "heldout": [
        ("The city council voted to {act} the {thing} budget by {pct} percent next year.",
         {"act": ["raise", "cut", "freeze"], "thing": ["transport", "library", "parks"], "pct": ["5", "10", "2"]}),
        ("Please remember to submit your {form} before the {day} deadline.",
         {"form": ["tax return", "timesheet", "application", "expense report"], "day": ["Friday", "end-of-month"]}),
        ("Photosynthesis converts {input} into {output} using energy from sunlight.",
         {"input": ["carbon dioxide and water", "light and water"], "output": ["glucose and oxygen", "sugar"]}),
        ("Our flight to {city} was delayed by {n} hours because of {reason}.",
         {"city": ["Lisbon", "Chicago", "Osaka", "Nairobi"], "n": ["two", "three", "six"],
          "reason": ["fog", "a strike", "a technical problem"]}),
        ("The museum's new exhibition on {topic} opens to the public in {month}.",
         {"topic": ["ancient Egypt", "modern sculpture", "space travel"], "month": ["March", "June", "October"]}),
    ],
}

_GENERIC = {
    "train": ["idk", "i dont know", "nothing", "no idea", "not sure", "anything", "something", "whatever", "none",
              "n/a", "pass", "dunno", "i cant think of anything", "nothing comes to mind", "no", "yes", "ok", "?",
              "hmm", "good question", "i have no clue", "skip"],
    "heldout": ["I don't know.", "No clue", "nope", "Not really sure.", "I can't think of one", "nah", "idc",
                "Nothing really", "unsure", "can't say", "no answer", "...", "I give up", "dont know", "eh",
                "sorry, no idea", "stuff", "things", "blank"],
}

_RAMBLE = {  # vague fragments: hedges, fillers, no concrete idea
    "train": (["you could maybe", "i guess you could", "well you can", "maybe you could", "people might"],
              ["use {it} for a lot of things", "do many things with {it}", "use {it} in different ways",
               "find some kind of use for {it}", "do something with {it}"],
              ["depending on what you need", "i think", "like lots of stuff really", "if you want to",
               "it just depends", "or whatever works", "you know"]),
    "heldout": (["honestly it could", "it might", "there are probably", "some people would", "it is possible to"],
                ["be used for all sorts of stuff", "have a bunch of different purposes", "be useful in many ways",
                 "work for various things", "help with things in general"],
                ["i suppose", "in some situations", "kind of", "if you think about it", "more or less",
                 "and so on", "basically"]),
}


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def gibberish(rng, style="train"):
    """1-6 made-up words of random syllables, or a keyboard mash."""
    if rng.random() < 0.2:
        keys = _KEYBOARD[style]
        return " ".join("".join(_pick(rng, keys) for _ in range(int(rng.integers(3, 9))))
                        for _ in range(int(rng.integers(1, 4))))
    onset, vowel, coda = _SYLLABLES[style]
    words = ["".join(_pick(rng, onset) + _pick(rng, vowel) + _pick(rng, coda) for _ in range(int(rng.integers(1, 4))))
             for _ in range(int(rng.integers(1, 7)))]
    return " ".join(words)


def random_words(rng, style="train", vocabulary=None):
    """2-10 real words drawn from vocabulary (default: the style's common-word list), in random order."""
    vocabulary = list(vocabulary) if vocabulary else _WORDS[style]
    return " ".join(_pick(rng, vocabulary) for _ in range(int(rng.integers(2, 11))))


def shuffled(rng, texts):
    """The words of one of texts (one with >= 3 words when there is one), in a random order that differs
    from the original where it can."""
    long = [t for t in texts if len(word_tokens(t)) >= 3] or list(texts)
    words = word_tokens(_pick(rng, long))
    for _ in range(5):
        perm = [words[i] for i in rng.permutation(len(words))]
        if perm != words:
            break
    return " ".join(perm)


def unrelated(rng, style="train"):
    """One fluent sentence about an unrelated topic, from the style's templates."""
    template, slots = _pick(rng, _UNRELATED[style])
    return template.format(**{k: _pick(rng, v) for k, v in slots.items()})


def generic(rng, style="train"):
    return _pick(rng, _GENERIC[style])


def ramble(rng, style="train", subject="it"):
    """A hedge, a vague use and a filler; subject names the prompt's object sometimes."""
    head, body, tail = _RAMBLE[style]
    it = subject if rng.random() < 0.5 else "it"
    parts = [_pick(rng, head), _pick(rng, body).format(it=it)]
    if rng.random() < 0.7:
        parts.append(_pick(rng, tail))
    return " ".join(parts)


def prompt_subject(prompt):
    """The test item of a prompt "...: brick." -> "the brick"; "it" when the prompt has no ": item" ending."""
    head, sep, item = prompt.rpartition(":")
    item = item.strip().strip(".").strip()
    return f"the {item}" if sep and item and len(item.split()) <= 3 else "it"


def make_probes(rng, kind, n, *, prompt="", own_answers=(), other_answers=(), vocabulary=None, style="train"):
    """n probe texts of one kind for prompt. own_answers: real answers to this prompt (for shuffled);
    other_answers: real answers to other prompts (for other_prompt; sampled without replacement while
    they last); vocabulary: words for random_words. -> [str] (fewer than n only for other_prompt when
    other_answers has fewer)."""
    if kind not in KINDS:
        raise ValueError(f"probe kind {kind!r}: choose from {', '.join(KINDS)}")
    if style not in STYLES:
        raise ValueError(f"probe style {style!r}: choose from {', '.join(STYLES)}")
    if kind == "other_prompt":
        other_answers = list(other_answers)
        take = rng.choice(len(other_answers), size=min(n, len(other_answers)), replace=False) if other_answers else []
        return [other_answers[i] for i in take]
    if kind == "shuffled" and not own_answers:
        raise ValueError("shuffled probes need own_answers (real answers to the prompt)")
    make = {"gibberish": lambda: gibberish(rng, style),
            "random_words": lambda: random_words(rng, style, vocabulary),
            "shuffled": lambda: shuffled(rng, own_answers),
            "unrelated": lambda: unrelated(rng, style),
            "generic": lambda: generic(rng, style),
            "ramble": lambda: ramble(rng, style, prompt_subject(prompt))}[kind]
    return [make() for _ in range(n)]


def training_negatives(rng, prompt, groups, prompts, n_per_kind, kinds=KINDS, style="train"):
    """{kind: [texts]} for prompt, built only from the answers of `prompts` (a CV fold's training prompts):
    other_prompt answers from the other prompts (half from those of the same task when there are some;
    texts that are also answers to prompt left out), random words from their answers' words (style
    "train"; the style's own word list for "heldout"), shuffled from prompt's own answers.
    rng: a numpy Generator, or an int seed: then each kind gets its own stream seeded by (seed, prompt,
    kind), so the kinds that do not depend on `prompts` give the same texts in every fold.
    groups: {prompt: (responses, scores, task)}."""
    task, own = groups[prompt][2], groups[prompt][0]
    others = [q for q in prompts if q != prompt]
    out = {}
    for kind in kinds:
        r = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
            [rng, zlib.crc32(prompt.encode()), KINDS.index(kind)])
        if kind == "other_prompt":
            same = [t for q in others if groups[q][2] == task for t in groups[q][0]]
            diff = [t for q in others if groups[q][2] != task for t in groups[q][0]]
            half = n_per_kind // 2 if same and diff else (n_per_kind if same else 0)
            own_set = set(own)
            texts = make_probes(r, kind, half, other_answers=same)  # the rest from other tasks
            texts += make_probes(r, kind, n_per_kind - len(texts), other_answers=diff)
            out[kind] = [t for t in texts if t not in own_set]
        elif kind == "random_words" and style == "train":
            vocab = sorted({w for q in others for t in groups[q][0][:200] for w in word_tokens(t) if w.isalpha()})
            out[kind] = make_probes(r, kind, n_per_kind, vocabulary=vocab or None, style=style)
        else:
            out[kind] = make_probes(r, kind, n_per_kind, prompt=prompt, own_answers=own, style=style)
    return out
