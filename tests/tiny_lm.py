"""The tiny corpus and model shared by the training-loop tests (test_training, test_callbacks)."""

from __future__ import annotations

import torch

from slmbook.model import GPT, GPTConfig
from slmbook.tokenizers import CharTokenizer

TEXT = ("the cat sat on the mat. the dog ran to the door. a bird flew over the red roof.\n"
        * 30)
TOK = CharTokenizer.fit(TEXT)
IDS = torch.tensor(TOK.encode(TEXT))
TRAIN, VAL = IDS[:2000], IDS[2000:]
FAST = {"batch_size": 8, "progress": False, "eval_batches": 2}


def tiny_model(seed: int = 0, **kw) -> GPT:
    """A one-layer GPT over TOK's vocabulary, seeded; ``kw`` overrides GPTConfig fields."""
    torch.manual_seed(seed)
    cfg = {"vocab_size": TOK.vocab_size, "block_size": 16, "n_layer": 1, "n_head": 2,
           "n_embd": 32} | kw
    return GPT(GPTConfig(**cfg))
