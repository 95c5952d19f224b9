r"""Passages: the pieces of documents that a retriever indexes and returns.

:func:`split_passages` cuts documents into passages of at most ``max_words``
words, along paragraph boundaries where it can, each overlapping the previous
one by ``overlap`` words so that no sentence is lost at a cut. A
:class:`Passage` remembers where it came from (``source``), so that retrieval
can be scored against topics as well as against passage ids.

Taught in chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slmbook._checks import non_negative_int, positive_int

__all__ = ["Passage", "split_passages", "unzip_passages"]


@dataclass(frozen=True)
class Passage:
    """A piece of a document: ``id`` is ``"<source>#<n>"``, the n-th passage of ``source``.

    Examples
    --------
    >>> Passage("with#0", "The with statement ...", "with").source
    'with'

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    id: str
    text: str
    source: str


def split_passages(
    documents: Mapping[str, str] | Sequence[str], *, max_words: int = 120, overlap: int = 20
) -> list[Passage]:
    """Cut documents into passages of at most ``max_words`` words.

    A passage ends at the end of a paragraph (a blank line) when that keeps at
    least half the budget, otherwise it is cut after ``max_words`` words. The
    next passage starts ``overlap`` words before the previous one ended.
    Whitespace inside a paragraph is collapsed to single spaces.

    Parameters
    ----------
    documents:
        ``{source: text}`` (e.g. :func:`slmbook.data.load_documents`) or a list
        of texts (their sources are ``"0"``, ``"1"``, ...). A single ``str`` is
        refused: it would otherwise be read as one document per character.
    max_words:
        Word budget of a passage (>= 1).
    overlap:
        Words shared by consecutive passages of one document (``0 <= overlap < max_words``).

    Returns
    -------
    list[Passage]
        In document order; empty documents give no passage.

    Examples
    --------
    >>> [p.text for p in split_passages(["one two three four five"], max_words=3, overlap=1)]
    ['one two three', 'three four five']

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    max_words = positive_int("max_words", max_words)
    overlap = non_negative_int("overlap", overlap)
    if overlap >= max_words:
        raise ValueError(f"overlap={overlap} must satisfy 0 <= overlap < max_words={max_words}")
    if isinstance(documents, str):
        raise TypeError(
            "documents is a single str; pass a list of texts ([text]) or a {source: text} dict"
        )
    if not isinstance(documents, Mapping | Sequence):
        raise TypeError(
            f"documents must be a list of str or a {{source: text}} dict, "
            f"not {type(documents).__name__}"
        )
    if not isinstance(documents, Mapping):
        documents = {str(i): text for i, text in enumerate(documents)}
    passages = []
    for source, text in documents.items():
        if not isinstance(text, str):
            raise TypeError(f"document {source!r} is a {type(text).__name__}, not a str")
        chunks = _split_words(text, max_words, overlap)
        passages.extend(Passage(f"{source}#{n}", chunk, source) for n, chunk in enumerate(chunks))
    return passages


def _split_words(text: str, max_words: int, overlap: int) -> list[str]:
    words, para = [], []  # para[i]: paragraph number of words[i]
    for p, paragraph in enumerate(re.split(r"\n\s*\n", text)):
        split = paragraph.split()
        words.extend(split)
        para.extend([p] * len(split))
    # ends: the word positions just after which a paragraph ends
    ends = [i for i in range(1, len(words) + 1) if i == len(words) or para[i] != para[i - 1]]
    chunks, start = [], 0
    while start < len(words):
        limit = start + max_words
        fitting = [e for e in ends if start + max_words // 2 <= e <= limit]
        end = fitting[-1] if fitting else min(limit, len(words))
        chunks.append(_join(words[start:end], para[start:end]))
        if end == len(words):
            break
        start = max(end - overlap, start + 1)
    return chunks


def _join(words: list[str], para: list[int]) -> str:
    out = [words[0]]
    for i in range(1, len(words)):
        out.append("\n\n" if para[i] != para[i - 1] else " ")
        out.append(words[i])
    return "".join(out)


def unzip_passages(
    passages: Sequence[str | Passage],
) -> tuple[list[str], list[str], list[str | None]]:
    """Ids, texts and sources of passages given as :class:`Passage` objects or plain strings.

    A plain string's id is its position (``"0"``, ``"1"``, ...) and its source ``None``.
    An empty list, a single ``str`` or an item of another type is an error.

    Examples
    --------
    >>> unzip_passages([Passage("a#0", "text", "a"), "more text"])
    (['a#0', '1'], ['text', 'more text'], ['a', None])

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if isinstance(passages, str) or not isinstance(passages, Sequence):
        raise TypeError(
            f"passages must be a list of str or Passage, not {type(passages).__name__}"
        )
    if len(passages) == 0:
        raise ValueError("cannot fit on an empty collection; pass at least one passage")
    ids, texts, sources = [], [], []
    for i, p in enumerate(passages):
        if isinstance(p, Passage):
            ids.append(p.id), texts.append(p.text), sources.append(p.source)
        elif isinstance(p, str):
            ids.append(str(i)), texts.append(p), sources.append(None)
        else:
            raise TypeError(f"passage {i} is a {type(p).__name__}, not a str or Passage; pass text")
    return ids, texts, sources
