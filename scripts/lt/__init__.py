"""Long-tail data tooling: list files, the exponential LT profile, image sources and the three tools.

Run them through :mod:`scripts.lt_tools` (``python -m scripts.lt_tools inspect|make-lt|select-tail``).
"""
