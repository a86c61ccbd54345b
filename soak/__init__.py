"""`make soak`: a bounded soak of ``pushgate serve --workers 2`` with Redis (soak/run.py)."""
