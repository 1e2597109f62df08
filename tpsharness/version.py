"""The version, in a module of its own: what every face prints, and what pyproject
reads (statically), without importing the package and all it names."""

__version__ = "0.1.0"
