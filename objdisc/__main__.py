"""``python -m objdisc``."""

from objdisc.cli import main

main()
