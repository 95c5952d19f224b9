"""slmbook: train a small language model step by step, then add retrieval.

The companion package of the slmbook Jupyter Book. Each module holds one
concept of the book; this file only re-exports the names readers use most.
"""

from slmbook.seeding import set_seed

__version__ = "0.1.0"

__all__ = ["__version__", "set_seed"]
