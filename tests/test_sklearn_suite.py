"""scikit-learn's own TfidfVectorizer tests, run against slmbook.tfidf.TfidfVectorizer.

The tests ship inside the installed scikit-learn
(``sklearn/feature_extraction/tests/test_text.py``). Every test function there
that uses ``TfidfVectorizer`` is collected here; the module's
``TfidfVectorizer`` name is replaced by slmbook's class while it runs, and
parametrized cases keep only the TfidfVectorizer ones (with slmbook's class or
an slmbook instance with the same options in their place). A test is skipped
only by name, when it exercises an option or a private attribute that slmbook
does not claim; SKIPPED gives each reason.
"""

from __future__ import annotations

import inspect
import itertools

import pytest

from slmbook.tfidf import TfidfVectorizer

sk_text = pytest.importorskip("sklearn.feature_extraction.tests.test_text")
SkTfidf = sk_text.TfidfVectorizer

NOT_OFFERED = "slmbook's TfidfVectorizer does not offer {}"
SKIPPED = {
    "test_tfidf_vectorizer_setters": (
        "reads scikit-learn's private TfidfTransformer (tv._tfidf); the behaviour it "
        "checks (weighting options apply at the next fit) is in test_tfidf.py"
    ),
    "test_tfidfvectorizer_export_idf": "reads scikit-learn's private tv._tfidf.idf_",
    "test_vectorizer_max_features": NOT_OFFERED.format("max_features="),
    "test_vectorizer_inverse_transform": NOT_OFFERED.format("inverse_transform"),
    "test_tfidf_vectorizer_with_fixed_vocabulary": NOT_OFFERED.format("vocabulary="),
    "test_tfidf_vectorizer_setter": NOT_OFFERED.format("vocabulary="),
    "test_tfidfvectorizer_invalid_idf_attr": NOT_OFFERED.format("vocabulary=")
    + " (the wrong-length idf_ check is in test_tfidf.py)",
    "test_vectorizer_vocab_clone": NOT_OFFERED.format("vocabulary="),
    "test_pickling_vectorizer": NOT_OFFERED.format("analyzer=") + " (pickling is in test_tfidf.py)",
    "test_tfidfvectorizer_binary": NOT_OFFERED.format("binary="),
    "test_tfidf_vectorizer_type": NOT_OFFERED.format("dtype="),
    "test_tfidf_vectorizer_preserve_dtype_idf": NOT_OFFERED.format("dtype="),
    "test_vectorizer_stop_words_inconsistent": NOT_OFFERED.format(
        "the stop-word consistency warning (get_stop_words, build_tokenizer, "
        "_check_stop_words_consistency)"
    ),
    "test_stop_word_validation_custom_preprocessor": NOT_OFFERED.format(
        "preprocessor= or tokenizer="
    ),
    "test_callable_analyzer_error": NOT_OFFERED.format("analyzer= or input="),
    "test_callable_analyzer_change_behavior": NOT_OFFERED.format("analyzer= or input="),
    "test_callable_analyzer_reraise_error": NOT_OFFERED.format("analyzer= or input="),
    "test_unused_parameters_warn": NOT_OFFERED.format("tokenizer=, preprocessor= or analyzer="),
}


def _ours(value):
    """sklearn's TfidfVectorizer (class or instance) -> slmbook's; anything else unchanged."""
    if value is SkTfidf:
        return TfidfVectorizer
    if isinstance(value, SkTfidf):
        changed = {k: v for k, v in value.get_params().items() if SkTfidf().get_params()[k] != v}
        return TfidfVectorizer(**changed)
    return value


def _uses_tfidf(value) -> bool:
    return value is SkTfidf or isinstance(value, SkTfidf)


def _cases():
    """(id, function, kwargs) for every TfidfVectorizer case of sklearn's test_text.py."""
    for name, func in sorted(vars(sk_text).items()):
        if not (name.startswith("test_") and inspect.isfunction(func)):
            continue
        marks = [m for m in getattr(func, "pytestmark", []) if m.name == "parametrize"]
        in_body = "TfidfVectorizer" in inspect.getsource(func)
        grids = []
        for mark in marks:
            argnames = mark.args[0]
            names = (
                [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else argnames
            )
            rows = []
            for row in mark.args[1]:
                row = row.values if hasattr(row, "values") else row  # pytest.param(...)
                rows.append(dict(zip(names, row if len(names) > 1 else [row], strict=True)))
            grids.append(rows)
        for combo in itertools.product(*grids):
            kwargs = {k: v for part in combo for k, v in part.items()}
            param_tfidf = any(_uses_tfidf(v) for v in kwargs.values())
            vectorizer_params = any(hasattr(v, "fit") for v in kwargs.values())
            if param_tfidf or (in_body and not vectorizer_params):
                label = "-".join(
                    "Tfidf" if _uses_tfidf(v) else str(v)[:20] for v in kwargs.values()
                )
                yield f"{name}[{label}]" if label else name, func, kwargs


CASES = list(_cases())


def test_the_suite_was_collected():
    names = {case_id.split("[")[0] for case_id, _, _ in CASES}
    assert len(names) >= 20  # sklearn 1.9: 24 functions use TfidfVectorizer
    assert set(SKIPPED) <= names  # every skip names a test that exists


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
@pytest.mark.parametrize(("func", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sklearn_tfidf_suite(func, kwargs, monkeypatch, request):
    if func.__name__ in SKIPPED:
        pytest.skip(SKIPPED[func.__name__])
    monkeypatch.setattr(sk_text, "TfidfVectorizer", TfidfVectorizer)
    kwargs = {k: _ours(v) for k, v in kwargs.items()}
    for fixture in inspect.signature(func).parameters:
        if fixture not in kwargs:
            kwargs[fixture] = request.getfixturevalue(fixture)
    func(**kwargs)
