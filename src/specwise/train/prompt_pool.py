"""A deterministic pool of chat prompts for distilling draft models from a target model.

The drafts should learn the target's answers to chat-assistant traffic, but the prompts must not
come from any benchmark set, or the benchmark would measure memorization. The text here comes
only from documentation that ships with Python (``pydoc_data`` help topics and stdlib docstrings),
poured into task templates in roughly equal shares: explanation, summarization, answering from a
given passage, translation, coding, arithmetic word problems and open-ended writing. The pool
depends only on ``(n, seed)`` and the Python version (whose docs are the source).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Generic, TypeVar

MAX_CHARS = 2000
"""No prompt is longer than this, so prompt plus answer fit a short training context."""

FAMILIES = ("explain", "summarize", "context", "translate", "code", "math", "writing")
"""Task families, each given an equal share of the pool."""

# Imported only for their docstrings; all are side-effect free to import. Missing ones are skipped.
_MODULES = (
    "string", "textwrap", "json", "collections", "itertools", "functools", "math", "statistics", "datetime",
    "pathlib", "re", "random", "heapq", "bisect", "fractions", "decimal", "csv", "difflib", "calendar", "shutil",
    "os.path", "urllib.parse", "html", "base64", "hashlib", "zlib", "gzip", "unittest", "argparse", "logging",
    "enum", "dataclasses", "typing", "operator", "copy", "pprint", "uuid", "ipaddress", "secrets", "time",
)

_SKIP_PREFIXES = ("Changed in version", "Added in version", "New in version", "Deprecated", "See also", "Note:")
_LIST_MARKER = re.compile(r"^(?:\d+\.|[*•-])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
_NOT_TOPICS = frozenset({"above", "first", "second", "left", "right", "similar", "dummy", "change", "data"})
"""Words that follow "the" in the docs but are not things to write about."""
_VOWEL_SOUND = re.compile(r"[aeio]|u[^sn]|un[^i]")
_TRIES = 100
"""Attempts at a new, short enough prompt of a family before giving up on distinctness."""
_NOUN = re.compile(r"\b(?:the|a|an)\s+([a-z]{4,12})(?=[.,;)])")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Function:
    module: str
    name: str
    """Qualified as it is written in code, e.g. ``textwrap.dedent``."""
    doc: str


@dataclass(frozen=True, slots=True)
class _Corpus:
    functions: list[_Function]
    paragraphs: list[str]
    """Single prose paragraphs, 80-700 characters."""
    passages: list[str]
    """Runs of consecutive prose paragraphs, 300-1500 characters."""
    sentences: list[str]
    topics: list[str]
    """Nouns the docs use often, for writing prompts."""


class _Deck(Generic[T]):
    """Draws items in shuffled passes, so every item is used once before any repeats."""

    def __init__(self, items: list[T], rng: random.Random) -> None:
        self._items, self._rng, self._left = items, rng, []

    def draw(self) -> T:
        if not self._left:
            self._left = list(self._items)
            self._rng.shuffle(self._left)
        return self._left.pop()


def _is_prose(par: str) -> bool:
    """Readable sentences, not a code sample, grammar rule, heading or version note."""
    if len(par) < 20 or not (par[0].isupper() or par[0] in "\"“") or par.startswith(_SKIP_PREFIXES):
        return False
    end = par.rstrip(")\"”")
    if not end.endswith((".", "!", "?")) or end.endswith(("e.g.", "i.e.")) or "::=" in par or ">>>" in par:
        return False
    return sum(c.isalpha() or c == " " for c in par) >= 0.8 * len(par)


def _paragraphs(text: str) -> list[str | None]:
    """The doc's paragraphs, cleaned; None marks a non-prose block (code, heading) that breaks a passage."""
    out: list[str | None] = []
    for block in re.split(r"\n\s*\n", text):
        if not block.strip() or block[:1].isspace():
            out.append(None)
            continue
        par = " ".join(_LIST_MARKER.sub("", block.strip()).split())
        out.append(par if _is_prose(par) else None)
    return out


def _cut(text: str, limit: int) -> str:
    """The longest run of whole sentences from the start that fits in limit ("" if none does)."""
    if len(text) <= limit:
        return text
    kept = ""
    for sentence in _SENTENCE_END.split(text):
        joined = f"{kept} {sentence}" if kept else sentence
        if len(joined) > limit:
            break
        kept = joined
    return kept


def _passages(pars: list[str | None]) -> list[str]:
    """From each prose paragraph on, the following ones joined until 300 characters, then cut to 1500.
    Passages overlap, which gives more distinct contexts than a doc split into disjoint runs."""
    out = []
    for start in range(len(pars)):
        run = []
        for par in pars[start:]:
            if par is None:
                break
            run.append(par)
            if sum(map(len, run)) >= 300:
                break
        text = _cut("\n\n".join(run), 1500)
        if len(text) >= 300:
            out.append(text)
    return out


def _stdlib_docs() -> tuple[list[_Function], list[str]]:
    """Documented public functions, classes and methods of _MODULES, and every docstring's text.
    Only names a module defines itself count, so what other code happened to import does not change the pool."""
    functions, texts = [], []
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        texts.append(inspect.cleandoc(module.__doc__ or ""))
        home = module.__name__.lstrip("_")  # C accelerators: heapq.heappush lives in _heapq
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not callable(obj) or (getattr(obj, "__module__", None) or "").lstrip("_") != home:
                continue
            members = [(f"{module_name}.{attr}", obj)]
            if inspect.isclass(obj):
                members += [
                    (f"{module_name}.{attr}.{m}", v)
                    for m, v in sorted(vars(obj).items())
                    if not m.startswith("_") and (inspect.isroutine(v) or isinstance(v, property))
                ]
            for name, member in members:
                with warnings.catch_warnings():  # reading the doc of a deprecated name (typing.io) warns
                    warnings.simplefilter("ignore", DeprecationWarning)
                    raw = getattr(member, "__doc__", None)
                if not isinstance(raw, str):
                    continue
                raw = inspect.cleandoc(raw)
                texts.append(raw)
                doc = _cut(" ".join(p for p in _paragraphs(raw) if p), 700)
                if len(doc) >= 40:
                    functions.append(_Function(module_name, name, doc))
    return functions, texts


@functools.cache
def _corpus() -> _Corpus:
    from pydoc_data.topics import topics

    functions, texts = _stdlib_docs()
    texts += [topics[key] for key in sorted(topics)]
    paragraphs, passages, sentences, nouns = [], [], [], Counter()
    for text in texts:
        pars = _paragraphs(text)
        passages += _passages(pars)
        for par in filter(None, pars):
            if 80 <= len(par) <= 700:
                paragraphs.append(par)
            sentences += [s for s in _SENTENCE_END.split(par) if 40 <= len(s) <= 220 and _is_prose(s)]
        nouns.update(_NOUN.findall(text.lower()))
    topics_ = sorted(
        word for word, count in nouns.items()
        if count >= 2 and word not in _NOT_TOPICS and (not word.endswith("s") or word.endswith("ss"))  # no plurals
    )
    paragraphs, passages, sentences = (list(dict.fromkeys(items)) for items in (paragraphs, passages, sentences))  # dedupe
    return _Corpus(functions, paragraphs, passages, sentences, topics_)


class _Maker:
    """Writes one prompt of a family at a time, drawing doc text from shuffled decks."""

    def __init__(self, corpus: _Corpus, rng: random.Random) -> None:
        self.rng = rng
        self.functions = _Deck(corpus.functions, rng)
        self.paragraphs = _Deck(corpus.paragraphs, rng)
        self.passages = _Deck(corpus.passages, rng)
        self.sentences = _Deck(corpus.sentences, rng)
        self.topics = _Deck(corpus.topics, rng)
        self.topic_set = frozenset(corpus.topics)
        self.by_module: dict[str, list[_Function]] = {}
        for fn in corpus.functions:
            self.by_module.setdefault(fn.module, []).append(fn)

    def sibling(self, fn: _Function) -> _Function | None:
        """Another documented name from the same module, to compare with or combine."""
        others = [f for f in self.by_module[fn.module] if f.name != fn.name]
        return self.rng.choice(others) if others else None

    def explain(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(_EXPLAIN_TEXT).format(text=self.paragraphs.draw())
        fn = self.functions.draw()
        other = self.sibling(fn)
        if other is not None and rng.random() < 0.25:
            return rng.choice(_COMPARE).format(a=fn.name, b=other.name)
        return rng.choice(_EXPLAIN_FUNCTION).format(name=fn.name, doc=fn.doc)

    def summarize(self) -> str:
        k = self.rng.choice(("one sentence", "two sentences", "three sentences"))
        return self.rng.choice(_SUMMARIZE).format(text=self.passages.draw(), k=k)

    def context(self) -> str:
        text = self.passages.draw()
        words = sorted({w for w in re.findall(r"[a-z]{4,12}", text.lower()) if w in self.topic_set}) or ["main idea"]
        return self.rng.choice(_CONTEXT).format(text=text, word=self.rng.choice(words))

    def translate(self) -> str:
        language = self.rng.choice(("French", "Spanish", "German"))
        return self.rng.choice(_TRANSLATE).format(text=self.sentences.draw(), language=language)

    def code(self) -> str:
        rng = self.rng
        fn = self.functions.draw()
        other = self.sibling(fn)
        if other is not None and rng.random() < 0.2:
            return rng.choice(_COMBINE).format(a=fn.name, b=other.name)
        return rng.choice(_CODE).format(name=fn.name, doc=fn.doc, module=fn.module)

    def math(self) -> str:
        rng = self.rng
        template = rng.choice(_MATH)
        a, b, c = rng.randint(2, 12), rng.randint(2, 9), rng.randint(2, 6)
        fields = dict(
            person=rng.choice(_PEOPLE), item=rng.choice(_ITEMS), a=a, b=b, c=c, total=a * b * c + rng.randint(1, 20),
            price=round(rng.uniform(0.5, 25), 2), big=rng.randint(100, 999), pct=rng.choice((5, 10, 15, 20, 25, 30, 40, 50)),
            speed=rng.randint(30, 120), x=rng.randint(10, 99), y=rng.randint(10, 99),
        )
        return template.format(**fields) + rng.choice(_MATH_SUFFIX)

    def writing(self) -> str:
        first, second = self.topics.draw(), self.topics.draw()
        article = "an" if _VOWEL_SOUND.match(first) else "a"
        return self.rng.choice(_WRITING).format(topic=first, a_topic=f"{article} {first}", other=second, k=self.rng.randint(3, 7))


_EXPLAIN_TEXT = (
    "Explain this in simple terms:\n\n{text}",
    "I'm reading the Python documentation and I don't understand this part:\n\n\"{text}\"\n\nCan you explain it with an example?",
    "What does this mean?\n\n{text}",
    "Can you explain the following to a beginner programmer?\n\n{text}",
    "{text}\n\nExplain the paragraph above in your own words.",
)
_EXPLAIN_FUNCTION = (
    "What does `{name}` do? Give a short example.",
    "How do I use `{name}` in Python?",
    "Here is the documentation of `{name}`:\n\n{doc}\n\nWhen would I use it, and what are common mistakes?",
    "Explain `{name}` to me like I'm new to Python.",
    "The docs for `{name}` say: \"{doc}\" What does that mean in practice?",
)
_COMPARE = (
    "What is the difference between `{a}` and `{b}`?",
    "When should I use `{a}` instead of `{b}`?",
)
_SUMMARIZE = (
    "Summarize the following text in {k}.\n\n{text}",
    "Summarize this:\n\n{text}",
    "Give a TL;DR of the text below.\n\n{text}",
    "Write a one-paragraph summary of this documentation for a busy developer.\n\n{text}",
    "Summarize the main points of this passage as a bulleted list.\n\n{text}",
    "{text}\n\nSummarize the text above in one sentence.",
)
_CONTEXT = (
    "Using the text below, answer: what does it say about the {word}?\n\n{text}",
    "Read the text and answer the question using only information from it.\n\n"
    "Text: {text}\n\nQuestion: What is said about the {word}?",
    "Rewrite the following text so that a beginner can understand it:\n\n{text}",
    "Extract every Python name (functions, keywords, types) mentioned in the text below, as a list.\n\n{text}",
    "Based only on the text below, write three questions a student might ask, and answer them.\n\n{text}",
    "Turn the text below into a short FAQ.\n\n{text}",
    "Rewrite the text below in a friendly, casual tone.\n\n{text}",
    "{text}\n\nAccording to the text above, what are the rules or conditions it describes? List them.",
)
_TRANSLATE = (
    "Translate into {language}: {text}",
    "Translate the following sentence into {language}.\n\n{text}",
    "How would you say this in {language}? \"{text}\"",
    "Please translate this technical sentence to {language}, keeping code names unchanged:\n\n{text}",
)
_CODE = (
    "Write a short Python function that uses `{name}`. Here is its documentation for reference:\n\n{doc}",
    "Write a Python function with type hints and a docstring that demonstrates `{name}`.",
    "Write a small pytest test for `{name}` that checks two typical cases.",
    "Show a short Python snippet that uses `{name}` and explain what it prints.",
    "Implement your own version of `{name}` without importing `{module}`, following this description:\n\n{doc}",
    "Write a Python script that solves a practical everyday task using `{name}`. Keep it under 30 lines.",
)
_COMBINE = (
    "Write a Python function that combines `{a}` and `{b}` to do something useful.",
    "Show a short example that uses both `{a}` and `{b}`.",
)
_MATH = (
    "{person} buys {a} {item} at ${price} each and pays with a ${big} bill. How much change does {person} get?",
    "A train travels at {speed} km/h for {b} hours and then at {x} km/h for {c} hours. How far does it go in total?",
    "A recipe needs {b} eggs to make {a} pancakes. How many eggs are needed for {big} pancakes?",
    "{person} saves ${x} every week. How many weeks until {person} has at least ${big}?",
    "A jacket costs ${big}. It is on sale for {pct}% off. What is the sale price?",
    "A rectangle is {x} cm wide and {y} cm long. What are its area and perimeter?",
    "{person} has {total} {item} and gives {a} to each of {c} friends. How many {item} are left?",
    "The average of {a} numbers is {x}. If the number {y} is added, what is the new average?",
    "What is {x} * {y} + {big} - {a} * {b}?",
    "A tank holds {big} liters and fills at {b} liters per minute. How long does it take to fill from {pct}% full?",
    "{person} reads {x} pages a day. A book has {big} pages. After {c} days, what fraction of the book is left?",
    "A shop sold {x} {item} on Monday and {pct}% more on Tuesday. How many did it sell on the two days together?",
)
_MATH_SUFFIX = ("", " Show your reasoning step by step.", " Explain your answer.", " Think step by step.")
_PEOPLE = ("Alice", "Ben", "Chen", "Dara", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Keiko", "Liam", "Maya", "Noor")
_ITEMS = ("apples", "notebooks", "pencils", "stickers", "cookies", "marbles", "tickets", "candles", "oranges", "cards")
_WRITING = (
    "Write a short story in which {a_topic} plays an important role.",
    "Write an email to a coworker about the {topic} in our project.",
    "Give me a list of {k} tips about working with {a_topic}.",
    "Write a haiku about {a_topic}.",
    "Write the opening paragraph of a blog post titled \"What my {topic} taught me about the {other}\".",
    "Write a dialogue between two friends that mentions {a_topic} and the word \"{other}\".",
    "Write a limerick about {a_topic} and the {other}.",
    "Write a product description for a gadget called the Smart {topic}.",
    "Write a short motivational speech using the {topic} as a metaphor.",
    "Write {k} creative names for a cafe themed around the word \"{topic}\".",
)


def tagged_prompts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n distinct ``(family, prompt)`` pairs; the family label lets callers check or report the mix."""
    rng = random.Random(seed)
    maker = _Maker(_corpus(), rng)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    order: list[str] = []
    while len(out) < n:
        if not order:  # one of each family per block keeps the shares equal
            order = list(FAMILIES)
            rng.shuffle(order)
        family = order.pop()
        for _ in range(_TRIES):
            text = getattr(maker, family)()
            if len(text) <= MAX_CHARS and text not in seen:
                break
        else:
            raise ValueError(f"cannot write {n} distinct prompts: the {family!r} family ran out")
        seen.add(text)
        out.append((family, text))
    return out


def build_prompt_pool(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """n chat conversations, each a single user message, for the target model to answer."""
    return [[{"role": "user", "content": text}] for _, text in tagged_prompts(n, seed)]
