"""simviewer: find, explain and clean up look-alike photos."""

__version__ = "0.1.0"
