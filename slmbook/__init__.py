"""slmbook: train a small language model step by step, then add retrieval.

The companion package of the slmbook Jupyter Book. Each module holds one
concept of the book (``slmbook.data``, ``slmbook.model``, ``slmbook.losses``,
...); this file only re-exports the names readers use most.
"""

from slmbook._version import __version__
from slmbook.data import get_batch, load_corpus, train_val_split
from slmbook.losses import cross_entropy, estimate_loss
from slmbook.model import GPT, GPTConfig
from slmbook.optim import SGD, Adam, AdamW
from slmbook.retrieval import TfidfRetriever
from slmbook.sampling import generate
from slmbook.seeding import set_seed
from slmbook.tfidf import TfidfVectorizer
from slmbook.tokenizers import BPETokenizer, CharTokenizer
from slmbook.training import EarlyStopping, History, TrainConfig, train

__all__ = [
    "GPT",
    "SGD",
    "Adam",
    "AdamW",
    "BPETokenizer",
    "CharTokenizer",
    "EarlyStopping",
    "GPTConfig",
    "History",
    "TfidfRetriever",
    "TfidfVectorizer",
    "TrainConfig",
    "__version__",
    "cross_entropy",
    "estimate_loss",
    "generate",
    "get_batch",
    "load_corpus",
    "set_seed",
    "train",
    "train_val_split",
]
