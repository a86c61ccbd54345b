"""pushgate: a real-time push gateway for web applications."""

__version__ = "0.1.0"
