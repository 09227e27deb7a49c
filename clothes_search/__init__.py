"""clothes-search: visual search for fashion catalogs."""

__version__ = "0.1.0"
