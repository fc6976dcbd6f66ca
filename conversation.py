"""Prompts as conversations, and the one definition of "the same prompt".

    prompt = as_prompt([{"role": "system", ...}, {"role": "user", ...}])   # -> Conversation (a str)
    prompt.messages                                                          # the turns, as given
    prompt_key(prompt)                                                       # what rows are grouped by

A prompt is either plain text (one user turn) or a Conversation: a str whose value is a readable flat
rendering ("System: ...\n\nUser: ...") that the scorers, grouping and logs use, and whose .messages the
tokenizer renders with the model's own chat format. A conversation of a single user turn is plain text, so
`[{"role": "user", "content": "X"}]` and `"X"` are the same prompt. A prompt written as an already rendered
chat transcript (ChatML, Llama-3, Mistral or Gemma markup at its start) is parsed into its turns, so it is
rendered once, in the model's format, and never wrapped twice; one that does not parse is refused.
Errors are PromptError with a one-line reason; data.py adds the file and line.
"""
import re
import unicodedata

ROLES = ("system", "user", "assistant")


class PromptError(ValueError):
    """A prompt that cannot be rendered: the message says what is wrong and what to give instead."""


def prompt_key(prompt):
    """The identity of a prompt: NFC-normalised text with whitespace runs collapsed to one space and the ends
    stripped. Two rows are answers to the same prompt iff their keys are equal (pairing, duplicate merging,
    splits, score groups, originality populations, eval all group by this)."""
    return " ".join(unicodedata.normalize("NFC", str(prompt)).split())


def by_prompt_key(texts_by_prompt):
    """{prompt: [texts]} -> {prompt_key: [texts]} (prompts that are the same by prompt_key merged); None stays None."""
    if texts_by_prompt is None:
        return None
    out = {}
    for prompt, texts in texts_by_prompt.items():
        out.setdefault(prompt_key(prompt), []).extend(texts)
    return out


class Conversation(str):
    """A prompt of several turns: str(self) is the flat rendering, self.messages the turns
    ((role, content) tuples: an optional system turn, then user/assistant alternating, ending with user)."""

    def __new__(cls, messages):
        messages = tuple((m[0], m[1]) for m in messages)
        flat = "\n\n".join(f"{role.capitalize()}: {content}" for role, content in messages)
        self = super().__new__(cls, flat)
        self.messages = messages
        return self

    def __reduce__(self):  # pickling and deepcopy keep the turns
        return (Conversation, (self.messages,))


def _content(m, i, what):
    content = m.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}] parts (the multimodal message layout)
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise PromptError(f"{what} message {i} has content parts other than {{\"type\": \"text\", \"text\": str}}")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise PromptError(f"{what} message {i} must be {{\"role\": str, \"content\": str}}")
    return content


def messages_of(value, what="prompt", start="user"):
    """[(role, content)] of a list of chat messages, checked: roles system/user/assistant, system only first,
    then user and assistant alternating from `start` (a completion starts with assistant), no empty content.
    Raises PromptError."""
    if not value:
        raise PromptError(f"{what} is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise PromptError(f"{what} message {i} must be {{\"role\": str, \"content\": str}}")
        role = m["role"]
        if role not in ROLES:
            raise PromptError(f"{what} message {i} has role {role!r} (supported: {', '.join(ROLES)})")
        content = _content(m, i, what)
        if not content.strip():
            raise PromptError(f"{what} message {i} ({role}) is empty")
        out.append((role, content))
    turns = out[1:] if out[0][0] == "system" else out
    for i, (role, _) in enumerate(turns):
        expected = ("user", "assistant")[(i + (start == "assistant")) % 2]
        if role != expected:
            where = len(out) - len(turns) + i
            raise PromptError(f"{what} message {where} is {role!r} where {expected!r} was expected (a system message "
                              "may only come first; then user and assistant turns alternate, starting with user)")
    return out


def as_prompt(value, what="prompt"):
    """A prompt from a row's field: text (a rendered transcript is parsed into its turns) or a message list
    ending with a user turn. One user turn alone gives its text. Raises PromptError."""
    if isinstance(value, str):
        parsed = parse_transcript(value)
        if parsed is None:
            return value
        messages = parsed
    else:
        messages = messages_of(value, what)
    if messages[-1][0] != "user":
        raise PromptError(f"{what} ends with a{'n' if messages[-1][0] == 'assistant' else ''} {messages[-1][0]} turn; "
                          "a prompt must end with a user turn")
    return messages[0][1] if len(messages) == 1 else Conversation(messages)


def turns(prompt):
    """[(role, content)] of a prompt: a Conversation's turns, or text as one user turn."""
    return list(prompt.messages) if isinstance(prompt, Conversation) else [("user", prompt)]


def _one_answer(messages, what):
    if len(messages) != 1 or messages[0][0] != "assistant":
        roles = ", ".join(r for r, _ in messages) or "nothing"
        raise PromptError(f"{what} must end in exactly one assistant message after the prompt, got {roles}")
    return messages[0][1]


def completion_text(value, prompt, what="chosen"):
    """The answer in a response given as messages: [one assistant message], or the whole conversation, the
    prompt's turns then one assistant message (UltraFeedback-style rows repeat the prompt so). Raises PromptError."""
    if value and isinstance(value[0], dict) and value[0].get("role") == "assistant":
        return _one_answer(messages_of(value, what, start="assistant"), what)
    messages, prefix = messages_of(value, what), turns(prompt)
    if messages[:len(prefix)] != prefix:
        raise PromptError(f"{what} is a conversation that does not start with the prompt's turns (give the answer "
                          "alone: [{\"role\": \"assistant\", \"content\": ...}])")
    return _one_answer(messages[len(prefix):], what)


def implicit_prompt(chosen, rejected):
    """TRL's implicit-prompt layout: chosen and rejected are whole conversations; the turns they share are the
    prompt, what follows is one assistant answer each -> (prompt, chosen text, rejected text). Raises PromptError."""
    chosen, rejected = messages_of(chosen, "field 'chosen'"), messages_of(rejected, "field 'rejected'")
    k = 0
    while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
        k += 1
    if k == 0:
        raise PromptError("fields 'chosen' and 'rejected' share no prompt turns (the implicit-prompt layout needs the "
                          "same turns before the answers)")
    prompt = as_prompt([{"role": r, "content": c} for r, c in chosen[:k]], "the prompt (the turns chosen and rejected share)")
    return prompt, _one_answer(chosen[k:], "field 'chosen'"), _one_answer(rejected[k:], "field 'rejected'")


# ----------------------------------------------------------------------------- rendered transcripts

# Each chat format's turn markup: (what a transcript starts with, one turn, the open assistant header at the end).
TRANSCRIPTS = {
    "ChatML": (r"<\|im_start\|>", r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n?",
               r"<\|im_start\|>assistant\n?"),
    "Llama-3": (r"(?:<\|begin_of_text\|>)?<\|start_header_id\|>",
                r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
                r"<\|start_header_id\|>assistant<\|end_header_id\|>(?:\n\n)?"),
    "Gemma": (r"(?:<bos>)?<start_of_turn>", r"<start_of_turn>(user|model)\n(.*?)<end_of_turn>\n?",
              r"<start_of_turn>model\n?"),
}
_MISTRAL = re.compile(r"\s*(?:<s>)?\s*\[INST\]")


def parse_transcript(text):
    """[(role, content)] when text (leading whitespace ignored) starts with a chat format's turn markup and
    parses as whole turns, optionally closed by the assistant header; None when it does not start with
    markup (ordinary text, even with markup strings inside); PromptError when it starts so but does not parse."""
    body = text.lstrip()
    for name, (start, turn, header) in TRANSCRIPTS.items():
        if not re.match(start, body):
            continue
        pos = re.match(r"(?:<\|begin_of_text\|>|<bos>)?", body).end()
        messages = []
        while pos < len(body):
            m = re.compile(turn, re.S).match(body, pos)
            if m is None:
                tail = re.compile(header + r"\s*$").match(body, pos)
                if tail is None:
                    raise PromptError(f"the prompt starts like a rendered {name} chat transcript but does not parse "
                                      f"as one (at character {pos}): give plain text, or the turns as a list of "
                                      "messages [{\"role\", \"content\"}]")
                break
            role = "assistant" if m.group(1) == "model" else m.group(1)
            messages.append({"role": role, "content": m.group(2)})
            pos = m.end()
        return messages_of(messages, f"the {name} transcript in the prompt")
    if _MISTRAL.match(text):
        return _parse_mistral(text)
    return None


def _parse_mistral(text):
    """[INST] user [/INST] answer</s>[INST] user [/INST] -> turns."""
    parts = re.split(r"\[INST\]|\[/INST\]", re.sub(r"^\s*(?:<s>)?", "", text))
    if len(parts) % 2 == 0 or parts[0].strip() or len(parts) < 3:
        raise PromptError("the prompt starts like a rendered Mistral transcript ([INST] ... [/INST]) but does not "
                          "parse as one: give plain text, or the turns as a list of messages [{\"role\", \"content\"}]")
    messages = []
    for i in range(1, len(parts), 2):
        messages.append({"role": "user", "content": parts[i].strip()})
        answer = re.sub(r"</s>\s*$", "", parts[i + 1]).strip()
        if answer:
            messages.append({"role": "assistant", "content": answer})
    return messages_of(messages, "the Mistral transcript in the prompt")


# Control-token strings of the supported chat formats: in data text they are only characters (tokenizer.py
# encodes them so); data.py counts the rows that hold one.
CONTROL_STRINGS = ("<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>", "<|end_of_text|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "[INST]",
                   "[/INST]", "</s>", "<|endoftext|>")


def has_control_string(text):
    return any(s in text for s in CONTROL_STRINGS)
