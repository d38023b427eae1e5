"""The bundled report notebooks, as the data package ``sysmail_ops.subscriptions.reports``.

pyproject.toml maps that package onto this folder, so the notebooks and ``data/`` ship
inside the wheel and ``importlib.resources`` finds them in a checkout and in an install
alike (``sysmail_ops.subscriptions.notebooks.bundled_reports_dir``). No code lives here.
"""
