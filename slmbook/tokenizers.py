"""Tokenizers: turning text into the integer ids a model reads, and back.

Two tokenizers share one interface, the abstract base class :class:`Tokenizer`:

* :class:`CharTokenizer`: one id per character; the vocabulary is the sorted
  set of characters of the training text.
* :class:`BPETokenizer`: byte-level byte-pair encoding (Sennrich et al., 2016,
  in the byte-level form of GPT-2). It starts from the 256 byte values, so it
  can encode any text, and learns merges: the most frequent adjacent pair of
  tokens becomes a new token, again and again, until the vocabulary reaches
  the size asked for.

Both satisfy ``decode(encode(text)) == text`` for every string, and both save
to (and load from) a small JSON file whose ``"kind"`` says which class wrote
it; :func:`load_tokenizer` reads either kind.

See chapter 1, "The data: X and Y" (book/01_data.ipynb).
"""

from __future__ import annotations

import abc
import json
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import torch

__all__ = ["MAX_CHUNK", "BPETokenizer", "CharTokenizer", "Tokenizer", "load_tokenizer", "split_chunks"]

# Pre-split pattern (GPT-2-like, standard ``re`` only): English contractions,
# letter runs, digit runs, runs of other symbols (each may take one leading
# space), then whitespace. Every character falls in one class, so the chunks
# always concatenate back to the text. Merges never cross a chunk boundary.
_SPLIT = re.compile(r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
# A longer chunk (text without whitespace) is cut every MAX_CHUNK characters, so
# that encoding costs linear time in the text; no token is longer than this.
MAX_CHUNK = 256
_CACHE_LIMIT = 100_000  # chunks remembered by BPETokenizer.encode
_NO_RANK = 1 << 62  # the rank of a pair that was never merged


def split_chunks(text: str) -> list[str]:
    """The chunks BPE works within: pre-split pieces, each at most ``MAX_CHUNK`` characters.

    Training and encoding both use it, and merges never cross a chunk boundary.
    The chunks concatenate back to ``text``.

    Examples
    --------
    >>> split_chunks("Hello, world!  42")
    ['Hello', ',', ' world', '!', ' ', ' 42']
    >>> [len(c) for c in split_chunks("a" * 600)]
    [256, 256, 88]

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    out = []
    for chunk in _SPLIT.findall(text):
        if len(chunk) <= MAX_CHUNK:
            out.append(chunk)
        else:
            out.extend(chunk[i : i + MAX_CHUNK] for i in range(0, len(chunk), MAX_CHUNK))
    return out


class Tokenizer(abc.ABC):
    """Abstract base class: text <-> list of token ids, plus saving and loading.

    Subclasses implement :meth:`encode`, :meth:`decode`, :attr:`vocab_size`
    and the two hooks that saving and loading are built on: ``_fields()`` (the
    JSON fields of an instance) and ``_from_fields(d)`` (an instance from
    them). :meth:`save`, :meth:`load`, :meth:`to_dict` and :meth:`from_dict`
    are shared; ``Tokenizer.load(path)`` and ``Tokenizer.from_dict(d)`` return
    an instance of whichever subclass wrote the data (its ``"kind"``).

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """

    VERSION: ClassVar[int] = 1  # the format version this class writes and reads
    _KINDS: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Tokenizer._KINDS[cls.__name__] = cls

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """V, the number of distinct token ids (ids are 0 .. V - 1)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Turn text into token ids, a list of length N (N depends on the tokenizer)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Turn token ids, shape (N,), back into text."""

    @abc.abstractmethod
    def _fields(self) -> dict[str, Any]:
        """The JSON-safe fields that :meth:`_from_fields` rebuilds this tokenizer from."""

    @classmethod
    @abc.abstractmethod
    def _from_fields(cls, d: dict[str, Any]) -> Tokenizer:
        """A tokenizer from the fields of :meth:`_fields` (raise ValueError if they are bad)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal tokenizer.

        Checkpoints embed it, so a model file carries its own tokenizer.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        return {"kind": type(self).__name__, "version": self.VERSION, **self._fields()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_dict`'s output, dispatching on ``d["kind"]``.

        Raises
        ------
        ValueError
            If ``d`` is not such a dict, holds another kind than ``cls`` (when
            ``cls`` is a subclass), has an unsupported version or bad fields.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        return cls._dispatch(d, what="dict", fix="Tokenizer.from_dict(d)")

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer to ``path`` as JSON; returns the path.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer saved by :meth:`save`; ``Tokenizer.load`` reads any kind.

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        ValueError
            If the file is not a tokenizer file (not JSON, missing fields,
            unsupported version, ids out of range) or, for a subclass, holds
            another kind. The message names the file.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer file {str(path)!r} does not exist; save one first with "
                "tokenizer.save(path)"
            )
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(
                f"tokenizer file {str(path)!r} is not valid JSON ({err}); it is corrupt or not "
                "a tokenizer file: pass a file written by tokenizer.save(path), or re-create it"
            ) from None
        return cls._dispatch(d, what=f"tokenizer file {str(path)!r}", fix="Tokenizer.load(path)")

    @classmethod
    def _dispatch(cls, d: Any, *, what: str, fix: str) -> Tokenizer:
        if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
            raise ValueError(
                f"{what} is not a saved tokenizer: expected a JSON object with a 'kind' field "
                f"(one of {sorted(Tokenizer._KINDS)}); use one written by tokenizer.save(path) "
                "or tokenizer.to_dict()"
            )
        kind = d["kind"]
        sub = Tokenizer._KINDS.get(kind)
        if sub is None:
            raise ValueError(
                f"{what} holds an unknown tokenizer kind {kind!r}; known kinds are "
                f"{sorted(Tokenizer._KINDS)}"
            )
        if not issubclass(sub, cls):
            raise ValueError(
                f"{what} holds a {kind}, not a {cls.__name__}; use {fix} (or "
                f"{kind}.{fix.split('.', 1)[1]}) to load it"
            )
        if d.get("version") != sub.VERSION:
            raise ValueError(
                f"{what} has {kind} format version {d.get('version')!r}, but this slmbook reads "
                f"version {sub.VERSION}; install the slmbook version that wrote it, or re-create "
                "and save the tokenizer"
            )
        try:
            return sub._from_fields(d)
        except (KeyError, TypeError, ValueError) as err:
            msg = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(
                f"{what} is not a valid {kind}: {msg}; it is corrupt: re-create and save the "
                "tokenizer"
            ) from None

    def _check_ids(self, ids: Sequence[int] | torch.Tensor) -> list[int]:
        """Validate ids (shape (N,)) and return them as a list of Python ints."""
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex():
                raise TypeError(f"token ids must be integers, got a tensor of dtype {ids.dtype}")
            if ids.ndim > 1:
                raise ValueError(
                    f"decode takes one sequence of ids, shape (N,), got shape {tuple(ids.shape)}; "
                    "decode each row: [tok.decode(row) for row in ids]"
                )
            ids = ids.reshape(-1).tolist()
        if isinstance(ids, (str, bytes)):
            raise TypeError(
                f"decode takes token ids, got {type(ids).__name__} {ids[:20]!r}; to turn text "
                "into ids use encode"
            )
        out = []
        for pos, i in enumerate(ids):
            if isinstance(i, bool) or not hasattr(i, "__index__"):
                raise TypeError(f"token ids must be integers, got {i!r} at position {pos}")
            out.append(operator.index(i))
        V = self.vocab_size
        if out and (min(out) < 0 or max(out) >= V):
            pos, bad = next((p, i) for p, i in enumerate(out) if not 0 <= i < V)
            raise ValueError(
                f"token id {bad} at position {pos} is out of range for this "
                f"{type(self).__name__} (vocab_size {V}, valid ids 0 .. {V - 1}); decode ids "
                "that this tokenizer produced"
            )
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _check_text(text: Any, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(
            f"{what} takes a str, got {type(text).__name__}; decode bytes first, "
            "e.g. data.decode('utf-8')"
        )


def _check_utf8(text: Any, what: str) -> None:
    _check_text(text, what)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"character {text[err.start]!r} at position {err.start} is a lone surrogate, which "
            "UTF-8 cannot encode; clean the text first, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


class CharTokenizer(Tokenizer):
    """One token per character; the vocabulary is the sorted set of characters seen.

    Build it with :meth:`fit`. ``stoi`` maps character -> id and ``itos`` maps
    id -> character. Encoding a character that :meth:`fit` never saw raises a
    ``ValueError``, unless the tokenizer has an ``unknown`` character, to which
    every unseen character is mapped (then decoding is lossy for those).

    Parameters
    ----------
    chars:
        The vocabulary, distinct single characters; id ``i`` is ``chars[i]``.
    unknown:
        ``None``, or one of ``chars`` that stands for every unseen character.

    Examples
    --------
    >>> tok = CharTokenizer.fit("hello")
    >>> tok.encode("hole")
    [1, 3, 2, 0]
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """

    def __init__(self, chars: Sequence[str], *, unknown: str | None = None) -> None:
        chars = list(chars)
        bad = [c for c in chars if not (isinstance(c, str) and len(c) == 1)]
        if bad:
            raise ValueError(f"chars must be single characters, got {bad[0]!r}")
        if len(set(chars)) != len(chars):
            dup = next(c for c, n in Counter(chars).items() if n > 1)
            raise ValueError(f"chars must be distinct, {dup!r} appears more than once")
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        if unknown is not None and unknown not in chars:
            raise ValueError(f"unknown={unknown!r} is not one of the chars; add it to them")
        self.itos: dict[int, str] = dict(enumerate(chars))
        self.stoi: dict[str, int] = {c: i for i, c in self.itos.items()}
        self.unknown = unknown

    @classmethod
    def fit(cls, text: str, *, unknown: str | None = None) -> CharTokenizer:
        """Build the vocabulary from the distinct characters of ``text``, sorted.

        Parameters
        ----------
        text:
            The training text.
        unknown:
            ``None`` (default): encoding an unseen character is an error. A
            single character such as ``"?"``: unseen characters are encoded as
            this one, which is added to the vocabulary if ``text`` lacks it.

        Returns
        -------
        CharTokenizer
            With ``vocab_size`` = number of distinct characters (+1 if the
            unknown character was added).

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        _check_text(text, "CharTokenizer.fit")
        if unknown is not None and not (isinstance(unknown, str) and len(unknown) == 1):
            raise ValueError(f"unknown must be a single character such as '?', got {unknown!r}")
        chars = set(text) | ({unknown} if unknown is not None else set())
        if not chars:
            raise ValueError("cannot fit a CharTokenizer on empty text: give it the training text")
        return cls(sorted(chars), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        """V, the number of characters in the vocabulary."""
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """One id per character of ``text``: a list of length ``len(text)``.

        Raises
        ------
        ValueError
            If ``text`` has a character outside the vocabulary and the
            tokenizer has no ``unknown`` character. The message names the
            character, its code point and its position.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        _check_text(text, "encode")
        stoi = self.stoi
        if self.unknown is not None:
            unk = stoi[self.unknown]
            return [stoi.get(c, unk) for c in text]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos, ch = next((p, c) for p, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in this "
                f"CharTokenizer's vocabulary of {self.vocab_size} characters; fit the tokenizer "
                "on text that contains it, or fit with unknown='?' to map unseen characters "
                "to an unknown token"
            ) from None

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The characters of ``ids`` (list or tensor of shape (N,)), joined.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        itos = self.itos
        return "".join([itos[i] for i in self._check_ids(ids)])

    def _fields(self) -> dict[str, Any]:
        return {"chars": list(self.itos.values()), "unknown": self.unknown}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> CharTokenizer:
        if not isinstance(d["chars"], list):
            raise ValueError(f"'chars' must be a list of characters, got {d['chars']!r:.40}")
        return cls(d["chars"], unknown=d.get("unknown"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` (left to right) by ``new_id``."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer(Tokenizer):
    """Byte-level byte-pair encoding, trained from scratch with :meth:`train`.

    Ids 0 .. 255 are the bytes of the UTF-8 encoding; id ``256 + r`` is the
    merge of rank ``r``, the pair ``merges[r]``. Text is first split into
    chunks (words with their leading space, digit runs, symbol runs,
    whitespace; a run longer than ``MAX_CHUNK`` = 256 characters is cut every
    256 characters, see :func:`split_chunks`) and merges never cross a chunk
    boundary, in training as in encoding.

    :meth:`decode` joins the tokens' bytes and decodes them as UTF-8 with
    ``errors="replace"``: an arbitrary id sequence (say, one sampled from a
    model) may cut a character in half, which shows up as U+FFFD. For ids
    produced by :meth:`encode`, ``decode(encode(text)) == text`` always.

    Parameters
    ----------
    merges:
        The learned pairs in order, as :meth:`train` returns them in
        ``merges``; empty (the default) gives the 256 byte tokens only.

    Examples
    --------
    >>> tok = BPETokenizer.train("aaabdaaabac", 259)
    >>> tok.merges
    [(97, 97), (97, 98), (256, 257)]
    >>> tok.encode("aaabdaaabac")
    [258, 100, 258, 97, 99]

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """

    def __init__(self, merges: Sequence[tuple[int, int]] = ()) -> None:
        self.merges: list[tuple[int, int]] = []
        for r, pair in enumerate(merges):
            a, b = (operator.index(x) for x in pair)
            if not (0 <= a < 256 + r and 0 <= b < 256 + r):
                raise ValueError(
                    f"merge {r} is {[a, b]}, but its ids must be in 0 .. {255 + r} "
                    "(bytes or earlier merges)"
                )
            self.merges.append((a, b))
        self._ranks = {p: r for r, p in enumerate(self.merges)}
        if len(self._ranks) != len(self.merges):
            raise ValueError("merges must be distinct pairs")
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for r, (a, b) in enumerate(self.merges):
            self.vocab[256 + r] = self.vocab[a] + self.vocab[b]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, *, verbose: bool = False) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text``.

        Each step counts every adjacent pair of tokens inside the chunks
        (weighted by how often each distinct chunk occurs), merges the most
        frequent pair into a new token (ties go to the smallest pair), and
        updates the counts of the chunks that changed.

        Parameters
        ----------
        text:
            The training text.
        vocab_size:
            The vocabulary size V to reach, at least 256. Training stops
            early when no pair is left to merge (every chunk is one token);
            ``vocab_size`` then reports the smaller size reached.
        verbose:
            Print each merge as it is learned.

        Returns
        -------
        BPETokenizer

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        _check_utf8(text, "BPETokenizer.train")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
        if vocab_size < 256:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must be at least 256, the number of "
                "byte tokens; ask for 256 plus the number of merges to learn"
            )
        chunks = Counter(split_chunks(text))
        words = [list(c.encode("utf-8")) for c in chunks]
        freqs = list(chunks.values())
        stats: dict[tuple[int, int], int] = defaultdict(int)  # pair -> weighted count
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunk indices
        for w, ids in enumerate(words):
            for p in pairwise(ids):
                stats[p] += freqs[w]
                where[p].add(w)
        tok = cls()
        for new_id in range(256, vocab_size):
            if not stats:
                break
            top = max(stats.values())
            pair = min(p for p, c in stats.items() if c == top)
            for w in where.pop(pair):
                ids = words[w]
                new = _merge(ids, pair, new_id)
                if len(new) == len(ids):
                    continue  # a stale entry: the pair left this chunk earlier
                for p in pairwise(ids):
                    stats[p] -= freqs[w]
                    if stats[p] == 0:
                        del stats[p]
                for p in pairwise(new):
                    stats[p] += freqs[w]
                    where[p].add(w)
                words[w] = new
            assert pair not in stats, "internal error: pair counts out of sync"
            tok._add_merge(pair)
            if verbose:
                print(f"merge {new_id - 255}: {tok.vocab[new_id]!r} -> {new_id} ({top} times)")
        return tok

    def _add_merge(self, pair: tuple[int, int]) -> None:
        new_id = 256 + len(self.merges)
        self._ranks[pair] = len(self.merges)
        self.merges.append(pair)
        self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
        self._cache.clear()

    @property
    def vocab_size(self) -> int:
        """V = 256 + the number of merges."""
        return 256 + len(self.merges)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that token ``token_id`` stands for, e.g. ``b" the"``.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        return self.vocab[self._check_ids([token_id])[0]]

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one chunk, earliest-learned first.

        The same as repeatedly replacing the lowest-ranked pair everywhere with
        :func:`_merge`, one occurrence at a time from the left: a merge's new
        pairs all rank later than the merge itself. ``rank[i]`` is the rank of
        the pair (ids[i], ids[i + 1]), updated only next to each merge.
        """
        ids = list(chunk.encode("utf-8"))
        ranks = self._ranks
        rank = [ranks.get(p, _NO_RANK) for p in pairwise(ids)]
        while rank:
            r = min(rank)
            if r == _NO_RANK:
                break
            i = rank.index(r)  # the leftmost occurrence of the best pair
            ids[i : i + 2] = [256 + r]
            del rank[i]
            if i > 0:
                rank[i - 1] = ranks.get((ids[i - 1], ids[i]), _NO_RANK)
            if i < len(rank):
                rank[i] = ranks.get((ids[i], ids[i + 1]), _NO_RANK)
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, a list of length N <= the number of UTF-8 bytes.

        Merges are applied in the order they were learned, within each chunk
        of :func:`split_chunks`; the cost is linear in the length of ``text``.

        Raises
        ------
        ValueError
            If ``text`` holds a lone surrogate (not encodable as UTF-8).

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        _check_utf8(text, "encode")
        cache, out = self._cache, []
        for chunk in split_chunks(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of ``ids`` (list or tensor of shape (N,)); invalid UTF-8 becomes U+FFFD.

        See chapter 1, "The data: X and Y" (book/01_data.ipynb).
        """
        vocab = self.vocab
        data = b"".join([vocab[i] for i in self._check_ids(ids)])
        return data.decode("utf-8", errors="replace")

    def _fields(self) -> dict[str, Any]:
        return {"merges": [list(p) for p in self.merges]}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> BPETokenizer:
        merges = d["merges"]
        if not isinstance(merges, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in merges
        ):
            raise ValueError("'merges' must be a list of [int, int] pairs")
        return cls([tuple(p) for p in merges])

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer of any kind saved with ``tokenizer.save(path)``.

    The same as ``Tokenizer.load(path)``.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    return Tokenizer.load(path)
