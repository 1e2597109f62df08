"""Small programs that show the kernel at work; each runs with ``python -m``."""
