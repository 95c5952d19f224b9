"""Tests of slmbook.reader: prompt, tokenizer, examples, answer-only loss, reading."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slmbook.facts import ATTRIBUTES, PASSAGE_TEMPLATES, QUESTION_TEMPLATES, make_world
from slmbook.losses import IGNORE_INDEX
from slmbook.reader import (
    ALPHABET,
    END,
    ReaderData,
    ReaderTokenizer,
    answer_loss,
    exact_match,
    make_batch,
    make_context,
    make_example,
    make_reader,
    read,
    reader_from_lm,
    render_prompt,
    teacher_forced_match,
)
from slmbook.tokenizers import CharTokenizer, Tokenizer


@pytest.fixture(scope="module")
def world():
    return make_world(seed=0, n_people=40, n_heldout=10)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_reader(n_layer=1, n_head=2, n_embd=16, block_size=448)


def test_tokenizer_covers_ascii_and_rejects_the_rest(tmp_path):
    tok = ReaderTokenizer()
    text = "".join(ALPHABET)
    assert tok.vocab_size == 96 and tok.decode(tok.encode(text)) == text
    assert tok.encode(END) == [0]
    with pytest.raises(ValueError, match=r"character 'é' \(U\+00E9\) at position 4 cannot be read"):
        tok.encode("caf\u00e9\u00e9"[:3] + "x\u00e9")
    loaded = Tokenizer.load(tok.save(tmp_path / "tok.json"))
    assert isinstance(loaded, ReaderTokenizer) and loaded == tok
    with pytest.raises(ValueError, match="always has the characters"):
        ReaderTokenizer("abc")


def test_render_prompt_is_passages_then_question():
    prompt = render_prompt("Where does Ann live?", ["Ann lives\nin Oslo.", "Bo was born in 1970."])
    assert prompt == "Ann lives in Oslo.\nBo was born in 1970.\nQ: Where does Ann live?\nA: "
    assert render_prompt("Where?") == "Q: Where?\nA: "


def test_context_has_gold_and_the_right_distractors(world):
    rng = random.Random(0)
    train_questions = {t for a in ATTRIBUTES for t in QUESTION_TEMPLATES[a][:3]}
    for _ in range(200):
        passages, qas = make_context(world, rng, n_passages=4, fresh_people=0.0, fresh_values=0.0)
        assert len(passages) == len(qas) == 4
        gold_q, gold_a = qas[0]
        person = next(p for p in world.people if p.name in gold_q)
        assert person.id in world.seen_ids
        assert any(gold_a in p and person.name in p for p in passages)
        attr = next(a for a in ATTRIBUTES if person.facts[a] == gold_a)
        for q, _ in qas[1:]:  # each distractor: same person, or same attribute
            assert person.name in q or any(
                q == t.format(name=n) for t in QUESTION_TEMPLATES[attr][:3]
                for n in [p.name for p in world.people])
        assert all(any(q == t.format(name=n) for t in train_questions
                       for n in [p.name for p in world.people]) for q, _ in qas)
        assert len({p for p in passages}) == 4


def test_fresh_people_and_values_are_invented(world):
    rng = random.Random(1)
    names = {p.name for p in world.people}
    passages, qas = make_context(world, rng, n_passages=3, fresh_people=1.0, fresh_values=1.0)
    assert not any(n in q for q, _ in qas for n in names)
    values = {p.facts[a] for p in world.people for a in ATTRIBUTES}
    assert not any(a in values for _, a in qas)
    assert all(any(a in p for p in passages) for _, a in qas)
    index_phrasings = {PASSAGE_TEMPLATES[a][0].split("{value}")[0] for a in ATTRIBUTES}
    assert index_phrasings


def test_batch_scores_the_answers_only():
    tok = ReaderTokenizer()
    prompts, answers = ["Q: a?\nA: ", "Long context\nQ: b?\nA: "], ["Oslo", "1970"]
    b = make_batch(tok, prompts, answers)
    assert b.ids.shape == (2, len(prompts[1]) + 4) and b.num_tokens == 10
    for row, p, a in zip(range(2), prompts, answers, strict=True):
        scored = b.targets[row][b.targets[row] != IGNORE_INDEX]
        assert tok.decode(scored) == a + END
        full = p + a + END
        assert tok.decode(b.ids[row, : len(full) - 1]) == full[:-1]
    ids, targets = b  # unpacks like (X, Y)
    assert ids is b.ids and targets is b.targets


def test_reader_data_batches(world):
    data = ReaderData(world, batch_size=8)
    g = torch.Generator().manual_seed(0)
    b1, b2 = data(g), data(g)
    assert b1.ids.shape[0] == 8 and b1.num_tokens > 8
    again = ReaderData(world, batch_size=8)(torch.Generator().manual_seed(0))
    assert torch.equal(again.ids, b1.ids) and not torch.equal(b1.ids, b2.ids)
    one = ReaderData(world, batch_size=4, questions="one")(g)
    assert all((t != IGNORE_INDEX).sum() <= 12 for t in one.targets)
    with pytest.raises(ValueError, match="questions='some'"):
        ReaderData(world, questions="some")


def test_answer_loss_matches_a_per_position_reference(tiny):
    tok = ReaderTokenizer()
    b = make_batch(tok, ["Q: a?\nA: ", "Bo lives in Oslo.\nQ: b?\nA: "], ["Oslo", "Lima"])
    loss = answer_loss(tiny, b)
    logits = tiny(b.ids)
    terms = [F.cross_entropy(logits[i, t], b.targets[i, t], reduction="sum")
             for i in range(2) for t in range(b.ids.shape[1]) if b.targets[i, t] != IGNORE_INDEX]
    assert len(terms) == b.num_tokens
    torch.testing.assert_close(loss, torch.stack(terms).sum() / b.num_tokens)


def test_right_padding_does_not_change_logits(tiny):
    tok = ReaderTokenizer()
    b = make_batch(tok, ["Q: a?\nA: ", "Bo lives in Oslo.\nQ: b?\nA: "], ["Oslo", "Lima"])
    n = len("Q: a?\nA: Oslo")
    alone = tiny(torch.tensor([tok.encode("Q: a?\nA: Oslo")]))
    torch.testing.assert_close(tiny(b.ids)[0, :n], alone[0], atol=1e-5, rtol=1e-5)


class _EndBias(nn.Module):
    """A random model that says END more often, so that greedy answers end at various lengths."""

    def __init__(self, model: nn.Module, bias: float) -> None:
        super().__init__()
        self.model, self.bias, self.config = model, bias, model.config

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = self.model(idx).clone()
        logits[..., 0] += self.bias * torch.arange(idx.shape[1]).float() / 200  # by position only
        return logits


def test_greedy_reading_equals_one_by_one_and_teacher_forcing(world, tiny):
    tok = ReaderTokenizer()
    model = _EndBias(tiny, 0.2)
    rng = random.Random(0)
    prompts = [make_example(world, rng)[0] for _ in range(12)]
    answers = read(model, tok, prompts, max_answer=8, batch_size=5)
    for p, a in zip(prompts, answers, strict=True):  # reference: unbatched, one step at a time
        ids = tok.encode(p)
        out = ""
        for _ in range(8):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt == 0:
                break
            out += tok.decode([nxt])
            ids.append(nxt)
        assert a == out
    ended = [len(a) < 8 for a in answers]
    assert 0 < sum(ended) < 12  # both kinds occur
    tf = teacher_forced_match(model, tok, prompts, answers, batch_size=5)
    assert tf == ended  # greedy's own answers match exactly when they ended
    wrong = [a + "x" for a in answers]
    assert not any(teacher_forced_match(model, tok, prompts, wrong))


def test_read_checks_the_length(tiny):
    with pytest.raises(ValueError, match="does not fit the model's block_size=448"):
        read(tiny, ReaderTokenizer(), ["x" * 440], max_answer=24)


def test_exact_match():
    assert exact_match(" Oslo ", "oslo") and not exact_match("Osl", "Oslo")
    assert exact_match(None, None) and not exact_match("Oslo", None)


def test_reader_from_lm_maps_characters_and_positions():
    torch.manual_seed(0)
    lm_tok = CharTokenizer.fit("abc Q:\n")
    from slmbook.model import GPT, GPTConfig

    lm = GPT(GPTConfig(vocab_size=lm_tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    reader = reader_from_lm(lm, lm_tok, block_size=64)
    tok = ReaderTokenizer()
    assert reader.config.block_size == 64 and reader.config.vocab_size == 96
    for c in "abc Q:\n":
        torch.testing.assert_close(reader.transformer.wte.weight[tok.stoi[c]],
                                   lm.transformer.wte.weight[lm_tok.stoi[c]])
    torch.testing.assert_close(reader.transformer.wpe.weight[:16], lm.transformer.wpe.weight)
    torch.testing.assert_close(reader.transformer.h[0].attn.c_attn.weight,
                               lm.transformer.h[0].attn.c_attn.weight)
    assert reader.lm_head.weight is reader.transformer.wte.weight


def test_closed_book_data_has_no_passages(world):
    tok = ReaderTokenizer()
    b = ReaderData(world, batch_size=6, closed_book=True)(torch.Generator().manual_seed(2))
    for row in b.ids:
        text = tok.decode(row).rstrip("\n")
        assert text.startswith("Q: ")
        lines = [line for line in text.split("\n") if line]
        assert all(line.startswith(("Q: ", "A: ")) for line in lines)
    names = {p.name for p in world.split_people("seen")}
    assert any(n in tok.decode(b.ids[0]) for n in names)  # real people, nothing invented


def test_min_distractors(world):
    data = ReaderData(world, batch_size=2, min_distractors=3, fresh_people=0.0, fresh_values=0.0)
    rng = random.Random(0)
    for _ in range(5):
        for pieces in data.examples(rng, 2):
            assert pieces[0][0].count("\n") == 4  # always 4 passages
    with pytest.raises(ValueError, match="min_distractors=4 exceeds max_distractors=3"):
        ReaderData(world, min_distractors=4)


def test_question_first_layout(world):
    assert render_prompt("Where?", ["Ann lives in Oslo."], question_first=True) == \
        "Q: Where?\nAnn lives in Oslo.\nA: "
    tok = ReaderTokenizer()
    b = ReaderData(world, batch_size=4, question_first=True)(torch.Generator().manual_seed(0))
    for ids, targets in zip(b.ids, b.targets, strict=True):
        text = tok.decode(ids)
        assert text.startswith("Q: ") and text.count("Q: ") == 1
        assert tok.decode([int(t) for t in targets if t >= 0]).endswith(END)
