"""objdisc's version (the one place it is written besides pyproject.toml; a test checks the two agree)."""

__version__ = "0.1.0"
