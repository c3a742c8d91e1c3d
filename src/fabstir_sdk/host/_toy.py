"""The built-in model: a small deterministic text generator, honestly a toy.

It exists so that demos and tests stream real tokens through the real protocol without
model weights. Answers depend only on the conversation, so a test can predict every token:

- "count to N" streams ``1``, `` 2``, ... `` N`` (N tokens);
- "write N words" streams exactly N words of filler;
- "my name is X" is remembered from the context: "what is my name?" answers with it;
- "remember (that) X" / "what did I ask you to remember?" likewise;
- anything else gets a short deterministic reply that quotes the prompt.

A token is a word or a punctuation mark with its leading whitespace (:func:`tokenize`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

from ..protocol import ChatMessage

__all__ = ["count_tokens", "reply_tokens", "tokenize"]

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_COUNT = re.compile(r"\bcount (?:from (\d+) )?to (\d+)\b", re.I)
_WORDS = re.compile(r"\bwrite (\d+) words\b", re.I)
_NAME = re.compile(r"\bmy name is ([A-Za-z][\w-]*)", re.I)
_ASK_NAME = re.compile(r"\bwhat(?:'s| is) my name\b", re.I)
_REMEMBER = re.compile(r"\bremember(?: that)? (.+?)[.!]?$", re.I)
_ASK_REMEMBER = re.compile(r"\bwhat did i ask you to remember\b", re.I)
_VOCABULARY = (
    "the",
    "host",
    "streams",
    "tokens",
    "over",
    "an",
    "encrypted",
    "socket",
    "while",
    "chain",
    "keeps",
    "score",
    "and",
    "every",
    "proof",
    "is",
    "a",
    "promise",
    "that",
    "work",
    "was",
    "done",
    "so",
    "user",
    "pays",
    "only",
    "for",
    "what",
    "proven",
    "rest",
    "of",
    "deposit",
    "comes",
    "back",
)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into the toy model's tokens; ``"".join`` gives the text back."""
    return _TOKEN.findall(text)


def count_tokens(messages: Sequence[ChatMessage]) -> int:
    """Prompt tokens of a conversation: its contents plus one per message for the role."""
    return sum(len(tokenize(m.content)) + 1 for m in messages)


def _filler(seed: bytes, n: int) -> Iterator[str]:
    """``n`` words chosen deterministically from ``seed``."""
    state = hashlib.sha256(seed).digest()
    for i in range(n):
        if i % 32 == 0 and i:
            state = hashlib.sha256(state).digest()
        word = _VOCABULARY[state[i % 32] % len(_VOCABULARY)]
        yield word if i == 0 else " " + word


def _last(pattern: re.Pattern[str], messages: Sequence[ChatMessage]) -> str | None:
    for message in reversed(messages):
        if message.role == "user":
            match = pattern.search(message.content)
            if match:
                return match.group(1)
    return None


def reply_tokens(messages: Sequence[ChatMessage]) -> Iterator[str]:
    """The toy model's answer to the last user message of ``messages``, token by token."""
    prompt = messages[-1].content.strip() if messages else ""
    earlier = messages[:-1]
    if count := _COUNT.search(prompt):
        start, end = int(count.group(1) or 1), int(count.group(2))
        step = 1 if end >= start else -1
        for i, n in enumerate(range(start, end + step, step)):
            yield str(n) if i == 0 else f" {n}"
        return
    if words := _WORDS.search(prompt):
        yield from _filler(prompt.encode(), int(words.group(1)))
        return
    if _ASK_NAME.search(prompt):
        name = _last(_NAME, earlier)
        text = f"Your name is {name}." if name else "You have not told me your name yet."
    elif told := _NAME.search(prompt):
        text = f"Nice to meet you, {told.group(1)}. I will remember your name."
    elif _ASK_REMEMBER.search(prompt):
        fact = _last(_REMEMBER, earlier)
        text = f"You asked me to remember that {fact}." if fact else "Nothing yet."
    elif asked := _REMEMBER.search(prompt):
        text = f"OK, I will remember that {asked.group(1)}."
    else:
        quoted = " ".join(prompt.split()[:12])
        turn = sum(1 for m in messages if m.role == "user")
        seed = "\n".join(f"{m.role}:{m.content}" for m in messages).encode()
        text = f'You said: "{quoted}". This is reply {turn} of the built-in toy model:'
        yield from tokenize(text)
        yield from (" " + w.lstrip() for w in _filler(seed, 12))
        yield "."
        return
    yield from tokenize(text)
