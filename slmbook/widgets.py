"""Interactive widgets: thin ipywidgets layers over tested, pure functions.

Each widget function imports ipywidgets lazily (it is an optional extra,
``pip install slmbook[widgets]``) and renders its default state immediately,
so that the static HTML page still shows something meaningful.
"""

from __future__ import annotations
