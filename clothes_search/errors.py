"""The root of the project's error hierarchy.

Every error raised on purpose derives from :class:`ClothesSearchError`, so that the CLI,
the HTTP API and the workers can map errors to exit codes, status codes and retry
decisions in one place each.
"""


class ClothesSearchError(Exception):
    """Base class of every error this project raises on purpose."""

    #: a short, stable machine-readable name (JSON error bodies, metrics labels)
    kind: str = "error"
