r"""A synthetic, seeded world of fictional people and their facts.

Retrieval-augmented generation is only measured honestly on facts that the
model *cannot* have memorised. :func:`make_world` invents ``n_people`` people
with unique made-up names and four attributes each (the city they live in,
their birth year, their employer, their favourite colour). Some people are
**seen**: the reader trains on their facts. The others are **held out**: their
facts only ever exist in the index that the retriever searches.

* :meth:`FactWorld.passages` is the index: one short passage per fact, in the
  index's phrasing (``"Ilo Varen lives in the city of Lima."``);
  ``passages(hard=True)`` adds an answerless "FAQ" passage per person that
  mentions the name, so that plain TF-IDF often ranks a wrong passage first
  (chapter 11 learns to fix that).
* :meth:`FactWorld.questions` gives one :class:`QA` per fact of a split
  (``"seen"``, ``"heldout"``), phrased with the training templates, or with
  the paraphrase template that training never uses (``paraphrase=True``);
  split ``"absent"`` asks about people who are not in the world at all (their
  answer is ``None``: the right reply is to abstain).
* :meth:`FactWorld.changed` is the "v2" world of chapter 12: the same people,
  a share of whom moved city or changed employer.

Chance (a model that always says the commonest value of an attribute) is
about one over the number of values: 1/24 for city and employer, 1/40 for the
birth year, 1/16 for the colour; :meth:`FactWorld.chance` measures it.

Taught in chapter 10, "Augmenting the input" (book/10_augment.ipynb).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from slmbook._checks import non_negative_int, positive_int, unit_interval
from slmbook.retrieval import Passage

__all__ = [
    "ATTRIBUTES",
    "PASSAGE_TEMPLATES",
    "QA",
    "QUESTION_TEMPLATES",
    "VALUES",
    "FactWorld",
    "Person",
    "invent_names",
    "make_world",
]

ATTRIBUTES = ("city", "year", "employer", "colour")
"""The attributes every person has, in a fixed order."""

VALUES: dict[str, tuple[str, ...]] = {
    "city": ("Lima", "Oslo", "Kyoto", "Cairo", "Quito", "Dakar", "Hanoi", "Perth", "Turin",
             "Porto", "Basel", "Graz", "Malmo", "Cork", "Leeds", "Bergen", "Lyon", "Riga",
             "Split", "Tartu", "Ghent", "Bonn", "Delft", "Nice"),
    "year": tuple(str(y) for y in range(1950, 1990)),
    "employer": ("Vantor", "Quillon", "Brightmoor", "Zephra", "Calder", "Norvik", "Helix",
                 "Orbanet", "Tessaly", "Marlow", "Kestrel", "Pinewell", "Solvay", "Draxel",
                 "Umbra", "Fennick", "Corvid", "Lumera", "Astrel", "Bramble", "Yarrow",
                 "Ostrava", "Wexley", "Gantry"),
    "colour": ("red", "blue", "green", "teal", "amber", "violet", "ochre", "indigo", "coral",
               "olive", "maroon", "cyan", "ivory", "lilac", "mint", "plum"),
}
"""The values an attribute can take (drawn uniformly for each person)."""

PASSAGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": ("{name} lives in the city of {value}.", "{name} has a home in the city of {value}.",
             "The city where {name} lives is {value}.", "{name} resides in {value}."),
    "year": ("{name} was born in the year {value}.", "{name} was born in {value}.",
             "The birth year of {name} is {value}.", "In {value}, {name} was born."),
    "employer": ("{name} works for the company {value}.", "{name} is employed by {value}.",
                 "The employer of {name} is {value}.", "{name} has a job at {value}."),
    "colour": ("{name}'s favourite colour is {value}.", "{name} likes the colour {value} best.",
               "The favourite colour of {name} is {value}.", "{name} loves the colour {value}."),
}
"""How a fact is written: the first phrasing is the index's, all of them are used in training."""

QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": ("Which city does {name} live in?", "In what city does {name} live?",
             "What is the city where {name} lives?", "{name} calls which city home?"),
    "year": ("In what year was {name} born?", "What is the birth year of {name}?",
             "When was {name} born?", "{name} came into the world in which year?"),
    "employer": ("Which company does {name} work for?", "For which company does {name} work?",
                 "What is the company {name} works for?", "{name} earns a living at which firm?"),
    "colour": ("What is {name}'s favourite colour?", "Which colour does {name} like best?",
               "What colour does {name} love?", "{name} would pick which colour above all?"),
}
"""Question templates; the last one of each attribute (the paraphrase) is never used in training."""

FAQ_TEMPLATE = "Questions about where {name} lives and works are answered in other notes."
"""The answerless passage that :meth:`FactWorld.passages` adds per person with ``hard=True``."""

SPLITS = ("seen", "heldout", "absent")

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "kr", "st", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m")


@dataclass(frozen=True)
class Person:
    """One person of a :class:`FactWorld`: ``id`` (``"p007"``), ``name`` and ``facts``.

    ``facts`` maps each attribute of :data:`ATTRIBUTES` to its value (a str).
    """

    id: str
    name: str
    facts: dict[str, str] = field(hash=False)


@dataclass(frozen=True)
class QA:
    """A question with its answer and where the answer is written.

    ``passage_id`` is the id of the index passage that holds the answer;
    ``answer`` and ``passage_id`` are ``None`` for a person who is not in the
    world (split ``"absent"``). ``template`` is the index of the question
    template in :data:`QUESTION_TEMPLATES`.
    """

    question: str
    answer: str | None
    passage_id: str | None
    person: str
    attribute: str
    template: int = 0


def passage_id(person_id: str, attribute: str) -> str:
    """The id of the index passage of one fact: ``"p007/city"``."""
    return f"{person_id}/{attribute}"


def invent_names(n: int, rng: random.Random, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` distinct invented full names ("Ilo Varen"), none of them in ``exclude``.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    taken, names = set(exclude), []
    while len(names) < n:
        first = _word(rng, rng.choice((1, 2)))
        last = _word(rng, 2)
        name = f"{first.capitalize()} {last.capitalize()}"
        if name not in taken and len(first) > 2:
            taken.add(name)
            names.append(name)
    return names


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables))


@dataclass(frozen=True)
class FactWorld:
    """People, their facts, and who is seen in training; made by :func:`make_world`.

    Attributes
    ----------
    people:
        Every :class:`Person`, in id order.
    seen_ids, heldout_ids:
        The ids of the people whose facts the reader trains on, and of the
        people who only ever appear in the index.
    seed:
        The seed that made the world (and ``version``: 1, or 2 after :meth:`changed`).

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """

    people: tuple[Person, ...]
    seen_ids: frozenset[str]
    heldout_ids: frozenset[str]
    seed: int
    version: int = 1

    def __repr__(self) -> str:
        return (f"FactWorld(seed={self.seed}, version={self.version}, people={len(self.people)}, "
                f"seen={len(self.seen_ids)}, heldout={len(self.heldout_ids)})")

    def person(self, person_id: str) -> Person:
        """The :class:`Person` with this id (``KeyError`` with the valid range otherwise)."""
        for p in self.people:
            if p.id == person_id:
                return p
        raise KeyError(f"no person {person_id!r} in this world (ids p000 .. p{len(self.people) - 1:03d})")

    def split_people(self, split: str) -> list[Person]:
        """The people of ``"seen"``, ``"heldout"`` or ``"all"``."""
        if split == "all":
            return list(self.people)
        ids = {"seen": self.seen_ids, "heldout": self.heldout_ids}.get(split)
        if ids is None:
            raise ValueError(f"split={split!r} is unknown; use 'seen', 'heldout' or 'all'")
        return [p for p in self.people if p.id in ids]

    def passages(self, *, hard: bool = False) -> list[Passage]:
        """The index: one :class:`~slmbook.retrieval.Passage` per fact (index phrasing).

        Ids are ``"p007/city"``, sources the person's id. With ``hard=True``
        each person also gets an answerless passage ``"p007/faq"`` that
        mentions the name (and "lives", "works"), so that plain TF-IDF ranks
        it first for many questions: on the default world, recall@1 of the
        held-out questions drops from 99.5% to 78% (top-3 stays 99.8%).

        See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
        """
        out = []
        for p in self.people:
            for a in ATTRIBUTES:
                text = PASSAGE_TEMPLATES[a][0].format(name=p.name, value=p.facts[a])
                out.append(Passage(passage_id(p.id, a), text, p.id))
            if hard:
                out.append(Passage(f"{p.id}/faq", FAQ_TEMPLATE.format(name=p.name), p.id))
        return out

    def questions(self, split: str, *, paraphrase: bool = False, n_absent: int = 200) -> list[QA]:
        """One :class:`QA` per fact of the people of ``split``.

        Parameters
        ----------
        split:
            ``"seen"``, ``"heldout"`` or ``"absent"`` (``n_absent`` questions
            about invented people who are not in the world; answer ``None``).
        paraphrase:
            ``False``: the training templates, taken in turn (person ``i``,
            attribute ``j`` gets template ``(i + j) % 3``); ``True``: the
            paraphrase template, never used in training.

        See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
        """
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is unknown; use one of {', '.join(SPLITS)}")
        if split == "absent":
            n_absent = positive_int("n_absent", n_absent)
            rng = random.Random(f"absent-{self.seed}")
            names = invent_names(n_absent, rng, exclude=[p.name for p in self.people])
            out = []
            for i, name in enumerate(names):
                a = ATTRIBUTES[i % len(ATTRIBUTES)]
                t = len(QUESTION_TEMPLATES[a]) - 1 if paraphrase else i % 3
                out.append(QA(QUESTION_TEMPLATES[a][t].format(name=name), None, None,
                              f"absent{i:03d}", a, t))
            return out
        out = []
        for i, p in enumerate(self.split_people(split)):
            for j, a in enumerate(ATTRIBUTES):
                t = len(QUESTION_TEMPLATES[a]) - 1 if paraphrase else (i + j) % 3
                out.append(QA(QUESTION_TEMPLATES[a][t].format(name=p.name), p.facts[a],
                              passage_id(p.id, a), p.id, a, t))
        return out

    def chance(self, split: str = "heldout") -> dict[str, float]:
        """Exact match of always answering an attribute's commonest seen value, per attribute.

        See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
        """
        seen, people = self.split_people("seen"), self.split_people(split)
        out = {}
        for a in ATTRIBUTES:
            guess = Counter(p.facts[a] for p in seen).most_common(1)[0][0]
            out[a] = sum(p.facts[a] == guess for p in people) / len(people)
        return out

    def changed(self, fraction: float = 0.3, *, seed: int = 1,
                attributes: Sequence[str] = ("city", "employer")) -> FactWorld:
        """The "v2" world: a share ``fraction`` of people moved city or changed employer.

        Each chosen person gets a new value (different from the old one) for
        one of ``attributes``; everything else, ids and names included, stays.
        ``world.diff(v2)`` lists what changed.

        See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
        """
        fraction = unit_interval("fraction", fraction, closed_right=True)
        bad = [a for a in attributes if a not in ATTRIBUTES]
        if bad or not attributes:
            raise ValueError(f"attributes={tuple(attributes)!r}: use some of {ATTRIBUTES}")
        rng = random.Random(f"changed-{self.seed}-{seed}")
        chosen = set(rng.sample(range(len(self.people)), round(fraction * len(self.people))))
        people = []
        for i, p in enumerate(self.people):
            if i in chosen:
                a = rng.choice(list(attributes))
                new = rng.choice([v for v in VALUES[a] if v != p.facts[a]])
                p = replace(p, facts={**p.facts, a: new})
            people.append(p)
        return replace(self, people=tuple(people), version=self.version + 1)

    def diff(self, other: FactWorld) -> list[tuple[str, str, str, str]]:
        """``(person_id, attribute, value here, value in other)`` for each fact that differs."""
        theirs = {p.id: p for p in other.people}
        return [(p.id, a, p.facts[a], theirs[p.id].facts[a])
                for p in self.people if p.id in theirs for a in ATTRIBUTES
                if p.facts[a] != theirs[p.id].facts[a]]

    def fingerprint(self) -> str:
        """A 16-hex-digit hash of every name, fact and split (equal worlds, equal hashes)."""
        h = hashlib.sha256()
        for p in self.people:
            split = "seen" if p.id in self.seen_ids else "heldout"
            h.update(f"{p.id}|{p.name}|{split}|".encode())
            h.update("|".join(p.facts[a] for a in ATTRIBUTES).encode() + b"\n")
        return h.hexdigest()[:16]


def make_world(seed: int = 0, n_people: int = 400, n_heldout: int = 100) -> FactWorld:
    """Invent ``n_people`` people, ``n_heldout`` of them held out from training.

    Parameters
    ----------
    seed:
        Everything (names, facts, which people are held out) follows from it.
    n_people:
        People in the world (and in the index), seen and held out together.
    n_heldout:
        How many of them only ever appear in the index (``0 <= n_heldout < n_people``).

    Returns
    -------
    FactWorld

    Examples
    --------
    >>> world = make_world(seed=0, n_people=10, n_heldout=2)
    >>> len(world.passages()), len(world.questions("heldout"))
    (40, 8)

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    seed = non_negative_int("seed", seed)
    n_people = positive_int("n_people", n_people)
    n_heldout = non_negative_int("n_heldout", n_heldout)
    if n_heldout >= n_people:
        raise ValueError(f"n_heldout={n_heldout} must be below n_people={n_people}: "
                         "some people must be seen in training")
    rng = random.Random(seed)
    names = invent_names(n_people, rng)
    people = tuple(Person(f"p{i:03d}", name, {a: rng.choice(VALUES[a]) for a in ATTRIBUTES})
                   for i, name in enumerate(names))
    heldout = frozenset(p.id for p in rng.sample(people, n_heldout))
    seen = frozenset(p.id for p in people) - heldout
    return FactWorld(people, seen, heldout, seed)
