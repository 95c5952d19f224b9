"""The version of slmbook, defined once: ``slmbook.__version__`` and pyproject.toml read it here.

A module of its own (not ``slmbook/__init__.py``) so that a submodule that
records the version (checkpoints) imports it without importing the package
``__init__`` (no import cycle), and so that building the wheel reads it
without importing torch.
"""

__version__ = "0.1.0"
