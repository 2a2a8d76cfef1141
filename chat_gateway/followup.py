"""Conversation-aware questions, pure: what to search for, given the question and the
conversation so far. No model, no I/O: a deterministic rule, so the same conversation always
searches the same way and costs nothing on the ask path.

A question is a **follow-up** when it leans on the conversation for its subject:

- it starts with a connective ("and", "also", "what about", "how about", "then", "same for"), or
- it refers back with a pronoun or a demonstrative ("its margins", "that quarter", "they") and
  names no subject of its own (no proper name, no period, no file name), or
- it is short (at most three content words) and names no subject of its own, or
- it is a fragment that names only a subject ("Orchard, in 2023" answering "Which company?"):
  it does not open with a question word or a request and has at most one other content word.

Otherwise it is a **new topic**: it is searched alone, so the previous topic cannot pull the
search back to its documents (asking about the travel-policy DOCX after three questions on a
filing finds the DOCX).

A follow-up is searched as itself plus the **subject** of the question it follows: that
question's proper names, periods (quarters, years, dates), file names and, when it has none of
those, its content words. The question it follows is itself resolved first, so a chain of
follow-ups keeps the subject of the question that started the topic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chat_gateway.protocol import MAX_QUESTION_CHARS
from parley.contracts import ChatMessage

_CONNECTIVE = re.compile(
    r"^\s*(?:and|also|plus|then|so|but|or|what about|how about|and what about|same for|"
    r"what of|ok(?:ay)?,?\s+(?:and|what about)|now)\b", re.IGNORECASE)
_BACK_REFERENCE = re.compile(
    r"\b(?:it|its|it's|they|them|their|theirs|this|that|these|those|there|he|she|his|her|"
    r"the same|the former|the latter|above|previous(?:ly)?)\b", re.IGNORECASE)
_PERIOD = re.compile(
    r"\b(?:Q[1-4]\s*(?:FY)?\s*'?\d{2,4}|(?:FY|fiscal(?: year)?)\s*'?\d{2,4}|"
    r"(?:first|second|third|fourth) quarter(?: of)?(?: fiscal)?\s*\d{4}|(?:19|20)\d\d|"
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December)\s+\d{1,2},?\s+\d{4})\b", re.IGNORECASE)
_FILE = re.compile(r"\b[\w\-.]+\.(?:pdf|docx?|pptx?|xlsx?|txt|md)\b", re.IGNORECASE)
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_LABEL = re.compile(r"Q[1-4]|FY\d{0,4}|H[12]", re.IGNORECASE)  # "Q3": a period, not a name
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9&'\-]*")
_STOP = _words("""
a an the and or but of to in on at by for from with as is are was were be been do does did has have
had it its it's this that these those they them their what which who whom when where why how much
many any some all each about into over under than then so also plus now ok okay same tell me show
give list explain describe please can could would should will may might there here i you we our
your my more most other such only just very
""")
_QUESTION_WORDS = _words("what which who whom when where why how is are was were do does did "
                         "can could would should will may might tell show give list")
_OPENERS = _QUESTION_WORDS | _words("summarize summarise compare describe explain find please "
                                    "in for from according")


@dataclass(frozen=True)
class Resolved:
    """What to search for: ``query``; ``follow_up``: whether it was completed from the
    conversation; ``subject``: what was added (empty for a new topic)."""

    query: str
    follow_up: bool
    subject: str = ""


def names(text: str) -> list[str]:
    """Capitalised words other than question words: proper names, mostly ("Kestrel",
    "Apple's" -> "Apple"). The first word counts only when the next is capitalised too (a
    name of two words, "Norrland Timber?"), since every sentence starts with a capital."""
    words = [m.group(0) for m in _WORD.finditer(text)]
    out: list[str] = []
    for i, word in enumerate(words):
        bare = (word[:-2] if word.endswith("'s") else word).rstrip("'")
        if (not bare[:1].isupper() or bare.lower() in _STOP | _OPENERS
                or _LABEL.fullmatch(bare)):
            continue
        if i == 0 and not (len(words) > 1 and words[1][:1].isupper()):
            continue
        out.append(bare)
    return out


def content_words(text: str) -> list[str]:
    words = (m.group(0).lower().removesuffix("'s").strip("'") for m in _WORD.finditer(text))
    return [w for w in words if w and w not in _STOP]


@dataclass(frozen=True)
class Parts:
    """What a question is about: proper names, periods, file names, other content words."""

    names: tuple[str, ...]
    periods: tuple[str, ...]
    files: tuple[str, ...]
    words: tuple[str, ...]


def parts(text: str) -> Parts:
    found_names = tuple(dict.fromkeys(names(text)))
    periods = tuple(dict.fromkeys(m.group(0) for m in _PERIOD.finditer(text)))
    files = tuple(dict.fromkeys(m.group(0).strip() for m in _FILE.finditer(text)))
    named = {w.lower() for w in (*found_names, *" ".join(periods + files).split())}
    words = tuple(dict.fromkeys(w for w in content_words(text) if w not in named
                                and not w.isdigit()))
    return Parts(found_names, periods, files, words)


def has_own_subject(question: str) -> bool:
    return bool(names(question) or _PERIOD.search(question) or _FILE.search(question))


def is_follow_up(question: str) -> bool:
    if _CONNECTIVE.search(question):
        return True
    if has_own_subject(question):
        # A fragment naming only a subject ("Orchard, in 2023" answering "Which company?",
        # "Norrland Timber?") continues the topic; a question or a request of its own starts one.
        opener = _WORD.search(question)
        return (opener is None or opener.group(0).lower() not in _OPENERS) and len(
            parts(question).words) <= 1
    return bool(_BACK_REFERENCE.search(question)) or len(content_words(question)) <= 3


def inherited(question: str, topic: str) -> str:
    """What a follow-up takes from its topic: each kind of subject (names, periods, file names)
    it does not name itself; the topic's other content words too when the follow-up has none
    of its own ("And Norrland?") or the topic names no subject at all."""
    own, of_topic = parts(question), parts(topic)
    taken: list[str] = []
    for mine, theirs in ((own.names, of_topic.names), (own.periods, of_topic.periods),
                         (own.files, of_topic.files)):
        if not mine:
            taken += theirs
    if not own.words or not (of_topic.names or of_topic.periods or of_topic.files):
        taken += [w for w in of_topic.words if w not in own.words]
    return " ".join(dict.fromkeys(taken))


def resolve(question: str, history: Sequence[ChatMessage], *, depth: int = 6) -> Resolved:
    """The search for ``question`` after ``history`` (oldest first; only user messages count,
    the last ``depth`` of them)."""
    # An earlier question counts with its last MAX_QUESTION_CHARS characters at most: the
    # OpenAI face's caller sends the history, of any length.
    earlier = [m.content[-MAX_QUESTION_CHARS:] for m in history if m.role == "user"][-depth:]
    if not earlier or not is_follow_up(question):
        return Resolved(question, False)
    # Resolve the chain oldest first: each follow-up inherits its predecessor's subject.
    topic = earlier[0]
    for previous in earlier[1:]:
        topic = f"{previous} {inherited(previous, topic)}" if is_follow_up(previous) else previous
    about = inherited(question, topic)
    if not about:
        return Resolved(question, False)
    return Resolved(f"{question} ({about})", True, about)
