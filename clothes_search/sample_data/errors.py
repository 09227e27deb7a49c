"""Errors of the sample-data generator."""

from __future__ import annotations

from clothes_search.errors import ClothesSearchError


class SampleDataError(ClothesSearchError):
    """The sample set cannot be built: bad sizes, an output folder in the way, a malformed input file."""

    kind = "sample_data"


class MissingSourceError(SampleDataError):
    """An input file (Fashion-MNIST, a background photo) is not installed on this machine."""

    kind = "sample_data_source"
