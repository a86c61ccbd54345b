"""The team board: a Worktile-like demo of pushgate (task board, notification bell,
online status). ``python -m demo`` serves it at http://127.0.0.1:8000/demo/ next to
pushgate; ``demo/app.py`` is the product backend, ``demo/static/`` the pages."""
