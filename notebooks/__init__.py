"""The Admin Console notebooks, as the data package ``sysmail_ops.widgets.notebooks``.

pyproject.toml maps that package onto this folder, so the notebooks ship inside the
wheel and ``sysmail-ops console`` finds them through ``importlib.resources`` in a
checkout and in an install alike. No code lives here.
"""
