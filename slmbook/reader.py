r"""The reader: a small GPT that answers a question from the passages put before it.

The augmented input X' = [passages; question] of chapter 10 is plain text,
one line each::

    Ilo Varen was born in the year 1961.
    Ilo Varen lives in the city of Lima.
    Q: Which city does Ilo Varen live in?
    A: Lima

:func:`render_prompt` writes the passages, then the question and ``"A: "``;
the model continues with the answer and the end-of-answer character
:data:`END` (a newline).

* :class:`ReaderTokenizer`: one token per character, printable ASCII and the
  newline (96 tokens); anything else is a clear error.
* :class:`ReaderData`: a batch sampler ``fn(generator) -> ReaderBatch`` for
  :func:`slmbook.training.train`. Each example puts the gold passage among 0
  to 3 distractors (the same person's other facts, and the same fact of other
  people), shuffled, in randomly chosen phrasings, followed by every question
  about them; all examples of a batch have the same number of passages, so
  their lengths are close and little is padded.
* :func:`answer_loss`: the ``loss_fn`` of ``train``: cross-entropy on the
  answer characters (and :data:`END`) only.
* :func:`read`: greedy decoding until :data:`END`, batched;
  :func:`teacher_forced_match`: the same exact match from one forward pass
  (the argmax at every answer position given the gold prefix), equal to
  greedy decoding's.

Taught in chapter 10, "Augmenting the input" (book/10_augment.ipynb).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmbook._checks import model_block_size, model_device, non_negative_int, positive_int
from slmbook.facts import (
    ATTRIBUTES,
    PASSAGE_TEMPLATES,
    QUESTION_TEMPLATES,
    FactWorld,
    invent_names,
)
from slmbook.inference import evaluating
from slmbook.losses import IGNORE_INDEX
from slmbook.tokenizers import CharTokenizer

__all__ = [
    "ALPHABET",
    "END",
    "ReaderBatch",
    "ReaderData",
    "ReaderTokenizer",
    "answer_loss",
    "char_alphabet_map",
    "exact_match",
    "make_batch",
    "make_context",
    "make_example",
    "make_reader",
    "pad_batch",
    "read",
    "reader_from_lm",
    "render_prompt",
    "teacher_forced_match",
]

END = "\n"
"""The end-of-answer character: the reader stops when it writes it."""

ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
"""The reader's characters: newline, then printable ASCII from space to ``~`` (96)."""

N_TRAIN_TEMPLATES = 3
"""Question templates used in training: all but the last (the paraphrase) of each attribute."""


class ReaderTokenizer(CharTokenizer):
    """One id per character of :data:`ALPHABET` (printable ASCII and newline).

    Examples
    --------
    >>> tok = ReaderTokenizer()
    >>> tok.vocab_size, tok.decode(tok.encode("A: Lima\\n"))
    (96, 'A: Lima\\n')

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """

    def __init__(self, chars: Sequence[str] = ALPHABET, *, unknown: str | None = None) -> None:
        if "".join(chars) != ALPHABET or unknown is not None:
            raise ValueError("a ReaderTokenizer always has the characters of slmbook.reader.ALPHABET "
                             "and no unknown character; use CharTokenizer for another vocabulary")
        super().__init__(chars)

    def encode(self, text: str) -> list[int]:
        """One id per character; ``ValueError`` naming the first character outside ASCII."""
        try:
            return super().encode(text)
        except ValueError:
            pos, ch = next((p, c) for p, c in enumerate(text) if c not in self.stoi)
            raise ValueError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {pos} cannot be read: the reader "
                "knows printable ASCII and newline only; transliterate the text (e.g. 'e' for "
                "'\u00e9') or remove the character") from None

    def __repr__(self) -> str:
        return "ReaderTokenizer(vocab_size=96)"


def render_prompt(question: str, passages: Sequence[str] = (), *,
                  question_first: bool = False) -> str:
    """The reader's input: one passage per line, then ``"Q: question"`` and ``"A: "``.

    Newlines inside a passage or the question become spaces (a newline
    ends a line of the prompt, and :data:`END` ends the answer). With
    ``question_first=True`` the question line comes before the passages.

    Examples
    --------
    >>> render_prompt("Where?", ["Ann lives in Oslo."])
    'Ann lives in Oslo.\\nQ: Where?\\nA: '

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    context = "".join(_line(p) + "\n" for p in passages)
    if question_first:
        return f"Q: {_line(question)}\n" + context + "A: "
    return context + f"Q: {_line(question)}\nA: "


def _line(text: str) -> str:
    return " ".join(text.split())


def exact_match(prediction: str | None, answer: str | None) -> bool:
    """:func:`slmbook.metrics.exact_match` as a bool; ``None`` (no answer) matches only ``None``."""
    if prediction is None or answer is None:
        return prediction is answer
    from slmbook.metrics import exact_match as squad_exact_match

    return bool(squad_exact_match(prediction, answer))


# ------------------------------------------------------------------ examples
def make_context(world: FactWorld, rng: random.Random, *, split: str = "seen",
                 n_passages: int | None = None, fresh_people: float = 0.5,
                 fresh_values: float = 0.2) -> tuple[list[str], list[tuple[str, str]]]:
    """Passages about a few facts, and one question with its answer per passage.

    The first fact is a random fact of a random person of ``split``; each
    further one (``n_passages`` in all, default 1 to 4 at random) is, with
    equal chance, another fact of the same person or the same fact of
    another person: the distractors a reader must not be fooled by. The
    passages (shuffled) and the questions use random training phrasings
    (never the paraphrase template). With probability ``fresh_people`` the
    people get invented names (so that the reader learns to match any name,
    not only the ones it sees), and with probability ``fresh_values`` each
    value is replaced by an invented word or year (so that it learns to
    copy, not to choose among the values it knows).

    Returns
    -------
    (passages, qas)
        ``qas[0]`` asks about the first fact; all passages are gold for one
        question and distractors for the others.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    people = world.split_people(split)
    n = rng.randint(1, 4) if n_passages is None else positive_int("n_passages", n_passages)
    person, attr = rng.choice(people), rng.choice(ATTRIBUTES)
    facts = [(person, attr)]
    others = [p for p in rng.sample(people, min(len(people), n + 1)) if p.id != person.id]
    other_attrs = [a for a in ATTRIBUTES if a != attr]
    rng.shuffle(other_attrs)
    for _ in range(n - 1):
        if (rng.random() < 0.5 and other_attrs) or not others:
            facts.append((person, other_attrs.pop()))
        else:
            facts.append((others.pop(), attr))
    names = {}
    if rng.random() < fresh_people:
        ids = list(dict.fromkeys(p.id for p, _ in facts))
        names = dict(zip(ids, invent_names(len(ids), rng), strict=True))
    passages, qas = [], []
    for p, a in facts:
        value = p.facts[a] if rng.random() >= fresh_values else _invent_value(a, rng)
        name = names.get(p.id, p.name)
        passages.append(rng.choice(PASSAGE_TEMPLATES[a]).format(name=name, value=value))
        qas.append((rng.choice(QUESTION_TEMPLATES[a][:N_TRAIN_TEMPLATES]).format(name=name), value))
    rng.shuffle(passages)
    return passages, qas


def make_example(world: FactWorld, rng: random.Random, *, split: str = "seen",
                 n_distractors: int | None = None, **fresh: float) -> tuple[str, str]:
    """One example ``(prompt, answer)``: the gold passage among ``n_distractors`` others.

    ``n_distractors`` defaults to 0 to 3 at random; ``fresh`` are
    ``fresh_people`` and ``fresh_values`` of :func:`make_context`.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    n = None if n_distractors is None else non_negative_int("n_distractors", n_distractors) + 1
    passages, qas = make_context(world, rng, split=split, n_passages=n, **fresh)
    return render_prompt(qas[0][0], passages), qas[0][1]


def _invent_value(attr: str, rng: random.Random) -> str:
    if attr == "year":
        return str(rng.randint(1000, 2999))
    word = invent_names(1, rng)[0].split()[1]
    return word.lower() if attr == "colour" else word


@dataclass
class ReaderBatch:
    """A padded batch: ``ids`` (B, T) int64, ``targets`` (B, T) int64, ``num_tokens``.

    ``targets[b, t]`` is the id that should follow ``ids[b, : t + 1]`` on the
    answer characters and :data:`IGNORE_INDEX` elsewhere (prompt and
    padding); ``num_tokens`` counts the scored targets. Unpacks as
    ``ids, targets = batch``.
    """

    ids: torch.Tensor
    targets: torch.Tensor
    num_tokens: int

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.ids, self.targets))

    def to(self, device: torch.device | str) -> ReaderBatch:
        """The same batch on ``device``."""
        return ReaderBatch(self.ids.to(device), self.targets.to(device), self.num_tokens)


def make_batch(tokenizer: ReaderTokenizer, prompts: Sequence[str], answers: Sequence[str],
               *, block_size: int | None = None) -> ReaderBatch:
    """Tokenize ``prompt + answer + END`` for each pair, score the answer, pad on the right.

    Raises ``ValueError`` when an example is longer than ``block_size + 1``.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    return pad_batch(tokenizer, [[(p, False), (a + END, True)]
                                 for p, a in zip(prompts, answers, strict=True)],
                     block_size=block_size)


def pad_batch(tokenizer: ReaderTokenizer, examples: Sequence[Sequence[tuple[str, bool]]],
              *, block_size: int | None = None) -> ReaderBatch:
    """Tokenize examples made of ``(text, scored)`` pieces and pad them into one batch.

    The characters of a scored piece are targets; all others are context.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    seqs, masks = [], []
    for pieces in examples:
        ids, mask = [], []
        for text, scored in pieces:
            e = tokenizer.encode(text)
            ids += e
            mask += [scored] * len(e)
        seqs.append(ids)
        masks.append(mask)
    T = max(len(s) for s in seqs) - 1
    if block_size is not None and T > block_size:
        raise ValueError(f"an example has {T + 1} tokens, more than block_size + 1 = "
                         f"{block_size + 1}; use fewer or shorter passages, or a longer block_size")
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    targets = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for b, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        s, m = torch.tensor(s), torch.tensor(m)
        ids[b, : len(s) - 1] = s[:-1]
        targets[b, : len(s) - 1] = torch.where(m[1:], s[1:], IGNORE_INDEX)
    return ReaderBatch(ids, targets, int((targets != IGNORE_INDEX).sum()))


class ReaderData:
    """A source of training batches for :func:`slmbook.training.train`.

    ``data(generator) -> ReaderBatch`` draws ``batch_size`` contexts of
    :func:`make_context`, all with the same number of passages (drawn per
    batch from ``min_distractors + 1`` .. ``max_distractors + 1``, so that
    lengths are close and little is padded). Each sequence holds the passages and then *every*
    question about them with its answer, in random order::

        passages / Q: q1 / A: a1 / Q: q2 / A: a2 ...

    so that one pass over a context scores several answers (the loss is on
    the answers only). With ``questions="one"`` it holds only the first
    question, exactly the prompt :func:`render_prompt` makes. With
    ``closed_book=True`` the passages are left out (and nothing is
    invented): the model can only learn the facts by heart.

    Examples
    --------
    >>> from slmbook.facts import make_world
    >>> data = ReaderData(make_world(n_people=20, n_heldout=5), batch_size=4)
    >>> data(torch.Generator().manual_seed(0)).ids.shape[0]
    4

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """

    def __init__(self, world: FactWorld, *, split: str = "seen", batch_size: int = 32,
                 max_distractors: int = 3, questions: str = "all", fresh_people: float = 0.5,
                 fresh_values: float = 0.2, closed_book: bool = False,
                 min_distractors: int = 0, question_first: bool = False,
                 block_size: int | None = None) -> None:
        world.split_people(split)  # checks the split
        if questions not in ("all", "one"):
            raise ValueError(f"questions={questions!r}: use 'all' or 'one'")
        self.world, self.split, self.block_size, self.questions = world, split, block_size, questions
        self.batch_size = positive_int("batch_size", batch_size)
        self.max_distractors = non_negative_int("max_distractors", max_distractors)
        self.min_distractors = non_negative_int("min_distractors", min_distractors)
        if self.min_distractors > self.max_distractors:
            raise ValueError(f"min_distractors={min_distractors} exceeds "
                             f"max_distractors={max_distractors}")
        self.fresh = {"fresh_people": fresh_people, "fresh_values": fresh_values}
        self.closed_book, self.question_first = bool(closed_book), bool(question_first)
        if self.question_first:
            self.questions = "one"
        if self.closed_book:
            self.fresh = {"fresh_people": 0.0, "fresh_values": 0.0}
        self.tokenizer = ReaderTokenizer()

    def __repr__(self) -> str:
        return (f"ReaderData(split={self.split!r}, batch_size={self.batch_size}, "
                f"max_distractors={self.max_distractors}, questions={self.questions!r}, "
                f"closed_book={self.closed_book})")

    def examples(self, rng: random.Random, n: int) -> list[list[tuple[str, bool]]]:
        """``n`` sequences as ``(text, scored)`` pieces, sharing one number of passages."""
        k = rng.randint(self.min_distractors + 1, self.max_distractors + 1)
        out = []
        for _ in range(n):
            passages, qas = make_context(self.world, rng, split=self.split, n_passages=k,
                                         **self.fresh)
            if self.question_first:
                q, a = qas[0]
                out.append([(render_prompt(q, [] if self.closed_book else passages,
                                           question_first=True), False), (a + END, True)])
                continue
            if self.questions == "one":
                qas = qas[:1]
            else:
                rng.shuffle(qas)
            context = "" if self.closed_book else "".join(_line(p) + "\n" for p in passages)
            pieces = [(context, False)]
            for q, a in qas:
                pieces += [(f"Q: {_line(q)}\nA: ", False), (a + END, True)]
            out.append(pieces)
        return out

    def __call__(self, generator: torch.Generator) -> ReaderBatch:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        examples = self.examples(random.Random(seed), self.batch_size)
        return pad_batch(self.tokenizer, examples, block_size=self.block_size)


def answer_loss(model: nn.Module, batch: ReaderBatch | tuple[torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
    """Mean cross-entropy over the answer characters only (the ``loss_fn`` of ``train``).

    ``model(batch.ids)`` gives logits (B, T, V); positions whose target is
    :data:`IGNORE_INDEX` (the prompt, the padding) are not scored.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    ids, targets = batch
    logits = model(ids)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


# ------------------------------------------------------------------ reading
@torch.no_grad()
def read(model: nn.Module, tokenizer: ReaderTokenizer, prompts: Sequence[str], *,
         max_answer: int = 24, batch_size: int = 256) -> list[str]:
    """Greedy answers to ``prompts``: the argmax character, again and again, until :data:`END`.

    Prompts are sorted by length and decoded ``batch_size`` at a time; each
    step runs the model once on the batch (right-padded: a causal model's
    logits at a position never see the padding after it) and stops early
    when every answer has ended. An answer that reaches ``max_answer``
    characters is cut there.

    Returns
    -------
    list[str]
        One answer per prompt, in the order of ``prompts``, without :data:`END`.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    positive_int("max_answer", max_answer)
    block = model_block_size(model)
    device = model_device(model)
    end = tokenizer.encode(END)[0]
    encoded = [tokenizer.encode(p) for p in prompts]
    if block is not None and any(len(e) + max_answer - 1 > block for e in encoded):
        n = max(len(e) for e in encoded)
        raise ValueError(f"a prompt has {n} characters; with max_answer={max_answer} it does not "
                         f"fit the model's block_size={block}: pass fewer passages")
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    with evaluating(model):
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            lengths = torch.tensor([len(encoded[i]) for i in chunk], device=device)
            ids = torch.zeros(len(chunk), int(lengths.max()) + max_answer, dtype=torch.long,
                              device=device)
            for b, i in enumerate(chunk):
                ids[b, : len(encoded[i])] = torch.tensor(encoded[i])
            done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
            answers = [[] for _ in chunk]
            rows = torch.arange(len(chunk), device=device)
            for step in range(max_answer):
                live = rows[~done]  # only the answers that have not ended are run
                pos = lengths[live] + step  # where their next character goes
                logits = model(ids[live, : int(pos.max())])  # (b, T, V)
                nxt = logits[torch.arange(len(live), device=device), pos - 1].argmax(-1)  # (b,)
                ids[live, pos] = nxt
                for b, c in zip(live.tolist(), nxt.tolist(), strict=True):
                    if c != end:
                        answers[b].append(c)
                done[live] = nxt == end
                if bool(done.all()):
                    break
            for b, i in enumerate(chunk):
                out[i] = tokenizer.decode(answers[b])
    return out


@torch.no_grad()
def teacher_forced_match(model: nn.Module, tokenizer: ReaderTokenizer, prompts: Sequence[str],
                         answers: Sequence[str], *, batch_size: int = 256) -> list[bool]:
    """Whether the argmax at every answer position, given the gold prefix, is the gold character.

    One forward pass per batch of ``prompt + answer + END``. Greedy decoding
    writes the gold answer exactly when each of its steps picks the gold
    next character, so this equals ``read(...) == answers`` (case-sensitive)
    at the cost of one step instead of one per character.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    out: list[bool] = []
    device = model_device(model)
    with evaluating(model):
        for s in range(0, len(prompts), batch_size):
            batch = make_batch(tokenizer, prompts[s : s + batch_size],
                               answers[s : s + batch_size]).to(device)
            pred = model(batch.ids).argmax(-1)  # (B, T)
            scored = batch.targets != IGNORE_INDEX
            ok = (pred == batch.targets) | ~scored
            out.extend(ok.all(dim=1).tolist())
    return out


def char_alphabet_map(source: Any, target: ReaderTokenizer) -> dict[int, int]:
    """``{target id: source id}`` for the characters two character tokenizers share."""
    return {i: source.stoi[c] for i, c in target.itos.items() if c in source.stoi}


# ------------------------------------------------------------------ models
def make_reader(*, n_layer: int = 4, n_head: int = 4, n_embd: int = 128, block_size: int = 448,
                **config: Any) -> nn.Module:
    """A randomly initialised :class:`slmbook.model.GPT` over the reader's 96 characters.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    from slmbook.model import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=len(ALPHABET), block_size=block_size, n_layer=n_layer,
                         n_head=n_head, n_embd=n_embd, **config))


def reader_from_lm(lm: nn.Module, lm_tokenizer: CharTokenizer, *, block_size: int = 448
                   ) -> nn.Module:
    """A reader that starts from a character-level language model's parameters.

    Every layer is copied. The token embedding of each reader character is
    the language model's embedding of the same character (characters it
    lacks keep a random one); the first ``lm.config.block_size`` position
    embeddings are copied and the later ones keep their random start.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    if not isinstance(lm_tokenizer, CharTokenizer):
        raise TypeError(f"reader_from_lm needs a CharTokenizer, got {type(lm_tokenizer).__name__}")
    c = lm.config
    reader = make_reader(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                         block_size=max(block_size, c.block_size), bias=c.bias)
    tok = ReaderTokenizer()
    state, new = lm.state_dict(), reader.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name in ("transformer.wte.weight", "lm_head.weight"):
                for i, j in char_alphabet_map(lm_tokenizer, tok).items():
                    new[name][i] = value[j]
            elif name == "transformer.wpe.weight":
                new[name][: value.shape[0]] = value
            elif name in new and new[name].shape == value.shape:
                new[name].copy_(value)
    reader.load_state_dict(new)
    return reader
