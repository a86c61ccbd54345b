"""Fuzzing entry points shared by the hypothesis tests and the atheris harness."""
