"""The ``ask`` and ``search`` commands of :mod:`slmbook.cli`, and the argument types of all.

``slmbook ask`` answers a question with :func:`slmbook.rag.default_rag`;
``slmbook search`` is TF-IDF search over a user's own text files.

:func:`collect_documents` reads the UTF-8 text files given (folders are
searched recursively, hidden files and folders skipped), skipping binary and
non-UTF-8 files with a note; :func:`build_or_reuse` splits them into passages
(:func:`slmbook.passages.split_passages`), and fits a
:class:`~slmbook.retrieval.TfidfRetriever` on them, or reuses the index saved
at ``--index`` when it holds exactly these passages. A file at ``--index``
that is not an index is never overwritten.

See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from slmbook.passages import Passage, split_passages
from slmbook.retrieval import TfidfRetriever

__all__ = ["UsageError", "add_ask", "add_search", "ask", "build_or_reuse", "collect_documents",
           "load_index", "search"]

_SNIFF = 8192  # bytes read to tell a binary file (one holding a NUL byte) from text


def collect_documents(paths: Sequence[str | Path], note: Callable[[str], None], *,
                      exclude: Path | None = None) -> dict[str, str]:
    """``{file name: text}`` of the UTF-8 text files in ``paths`` (folders recursively).

    Binary files (a NUL byte in their first 8 KiB) and files that are not
    UTF-8 are skipped, each with ``note(message)``; hidden files and folders
    (names starting with ".") and ``exclude`` (the index file) are left out.

    Raises
    ------
    ValueError
        For a path that does not exist, a folder without files, or when no
        readable text file remains.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    skip = exclude.resolve() if exclude is not None else None
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise ValueError(f"--docs: {str(given)!r} does not exist; give text files or folders")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ValueError(f"--docs: the folder {str(given)!r} holds no files "
                                 "(hidden ones are skipped)")
            files.extend(found)
        else:
            files.append(path)
    documents: dict[str, str] = {}
    for file in dict.fromkeys(files):  # each file once, in the order given
        if skip is not None and file.resolve() == skip:
            continue
        raw = file.read_bytes()
        if b"\0" in raw[:_SNIFF]:
            note(f"skipped {str(file)!r}: a binary file, not text")
            continue
        try:
            documents[str(file)] = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            note(f"skipped {str(file)!r}: not UTF-8 text (byte {err.start}); convert it with "
                 "e.g. `iconv -t utf-8`")
    if not any(text.strip() for text in documents.values()):
        raise ValueError("--docs: no readable text: every file given is empty, binary or not "
                         "UTF-8")
    return documents


def load_index(path: Path) -> TfidfRetriever:
    """The index saved at ``path``; ``ValueError`` naming ``--index`` when it is not one."""
    if path.is_dir():
        raise ValueError(f"--index: {str(path)!r} is a folder; give a file name for the index")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--index: {str(path)!r} is not a search index (a file saved by "
                         "`slmbook search --index`); choose another file: it is never "
                         "overwritten")
    try:
        return TfidfRetriever.load(path)
    except ValueError as err:
        raise ValueError(f"--index: {err}; choose another file: it is never "
                         "overwritten") from None


def build_or_reuse(documents: dict[str, str] | None, index: Path | None,
                   note: Callable[[str], None]) -> TfidfRetriever:
    """The retriever over ``documents``, saved at and reused from ``index`` when given.

    With ``index`` alone, the saved index is loaded. With both, it is reused
    when it holds exactly the passages of ``documents``, else refitted and
    saved again (``note`` says which); an ``index`` file that exists and is
    not an index is refused, never overwritten.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if documents is None:
        if index is None:
            raise ValueError("give --docs PATH... (files or folders to search), --index FILE "
                             "(a saved index), or both")
        if not index.exists():
            raise ValueError(f"--index: {str(index)!r} does not exist; build it with "
                             f"--docs PATH... --index {index}")
        return load_index(index)
    passages: list[Passage] = split_passages(documents)
    if index is not None and index.exists():
        saved = load_index(index)
        if (saved.ids_, saved.texts_) == ([p.id for p in passages], [p.text for p in passages]):
            note(f"reusing the index {str(index)!r} ({len(passages)} passages, unchanged)")
            return saved
        note(f"the files changed since {str(index)!r} was saved: refitting it")
    retriever = TfidfRetriever().fit(passages)
    if index is not None:
        tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
        try:
            retriever.save(tmp)
            os.replace(tmp, index)
        finally:
            tmp.unlink(missing_ok=True)
        note(f"saved the index of {len(documents)} files ({len(passages)} passages) to "
             f"{str(index)!r}")
    return retriever


# ----------------------------------------------------------------------------- commands


def positive_int_arg(text: str) -> int:
    """An argparse type: an int > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int_arg(text: str) -> int:
    """An argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 for none), got {value}")
    return value


def seed_arg(text: str) -> int:
    """An argparse type: a seed, an int in [0, 2**64)."""
    value = non_negative_int_arg(text)
    if value >= 2**64:
        raise argparse.ArgumentTypeError(f"expected a seed below 2**64, got {value}")
    return value


def positive_float_arg(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {value}")
    return value


def finite_float_arg(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value}")
    return value


class UsageError(Exception):
    """A bad option: reported like argparse's own errors (exit status 2)."""


def add_ask(sub: argparse._SubParsersAction) -> None:
    """The ``ask`` command's parser, added to ``sub``."""
    p = sub.add_parser("ask", help="answer a question about the fact world of chapter 10 (RAG)",
                       description="Answer a question with the shipped reader, reading the "
                                   "passages TF-IDF retrieves from the default fact world.")
    p.add_argument("question", help='e.g. "Which city does Zukra Tasror live in?"')
    p.add_argument("--k", type=non_negative_int_arg, default=3,
                   help="passages retrieved and read before the question; 0: closed book, the "
                        "question alone (default: 3)")
    p.add_argument("--show-passages", action="store_true",
                   help="also print the passages read, with their scores")
    p.add_argument("--min-score", type=finite_float_arg, default=None, metavar="S",
                   help="answer \"I don't know\" when the best passage scores below S, a "
                        "cosine in [0, 1] (default: always answer)")


def add_search(sub: argparse._SubParsersAction) -> None:
    """The ``search`` command's parser, added to ``sub``."""
    p = sub.add_parser("search", help="TF-IDF search over your own text files and folders",
                       description="Search UTF-8 text files (folders recursively) for the "
                                   "passages most similar to a query.")
    p.add_argument("query", nargs="?", default=None,
                   help="what to look for, in words (last, after the --docs paths, or first)")
    p.add_argument("--docs", nargs="+", metavar="PATH", default=None,
                   help="text files and folders to search (binary and non-UTF-8 files are "
                        "skipped with a note)")
    p.add_argument("--index", metavar="FILE", default=None,
                   help="save the index here and reuse it while the files are unchanged; "
                        "alone, search the saved index (never overwrites another file)")
    p.add_argument("--k", type=positive_int_arg, default=5, help="hits to print (default: 5)")


def ask(args: argparse.Namespace) -> int:
    """``slmbook ask``: print the shipped reader's answer (and the passages read); return 0.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    from slmbook import rag

    if not args.question.strip():
        raise UsageError("the question is empty; ask e.g. \"Which city does Zukra Tasror "
                          "live in?\"")
    pipeline = rag.default_rag(k=args.k, min_score=args.min_score)
    answer = pipeline.answer(args.question)
    print(rag.format_answer(answer) if args.show_passages else answer.text)
    if answer.abstained:
        best = f"{answer.hits[0].score:.3f}" if answer.hits else "none"
        print(f"slmbook ask: note: abstained: the best passage scores {best}, below "
              f"--min-score {args.min_score:g}", file=sys.stderr)
    return 0


def search(args: argparse.Namespace) -> int:
    """``slmbook search``: print the ``--k`` best passages of the files for the query; return 0.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    from slmbook.retrieval import format_hits

    if args.query is None and args.docs and len(args.docs) > 1:
        args.query = args.docs.pop()  # `--docs PATH... "query"`: --docs took the query too
    if args.query is None or not args.query.strip():
        raise UsageError("the query is empty; give words to look for, e.g. "
                          "slmbook search --docs notes/ \"gradient clipping\"")

    def note(message: str) -> None:
        print(f"slmbook search: note: {message}", file=sys.stderr)

    index = Path(args.index) if args.index else None
    docs = None if args.docs is None else collect_documents(args.docs, note, exclude=index)
    retriever = build_or_reuse(docs, index, note)
    print(format_hits(retriever.search(args.query, args.k)))
    return 0
