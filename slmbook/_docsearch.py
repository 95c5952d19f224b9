"""TF-IDF search over a user's own text files: what ``slmbook search`` does.

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

import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from slmbook.passages import Passage, split_passages
from slmbook.retrieval import TfidfRetriever

__all__ = ["build_or_reuse", "collect_documents", "load_index"]

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
