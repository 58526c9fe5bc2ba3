"""Classifr: an open image classifier that people can watch and teach."""

__version__ = "0.1.0"
