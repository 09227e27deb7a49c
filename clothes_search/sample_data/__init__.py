"""An offline consumer-to-shop sample set in DeepFashion2 format, built from Fashion-MNIST.

Catalog items are Fashion-MNIST garments upscaled and painted in a colour and pattern; each gets shop
photos on a studio backdrop, and pairs of 2–3 items appear together, transformed and partly hidden, on
crops of real photos (consumer images). See :func:`build_sample_set` and ``clothes-search make-sample-data``.
"""

from clothes_search.sample_data.build import SampleSetSummary, SplitSummary, build_sample_set
from clothes_search.sample_data.errors import MissingSourceError, SampleDataError
from clothes_search.sample_data.sources import SampleSources

__all__ = [
    "MissingSourceError",
    "SampleDataError",
    "SampleSetSummary",
    "SampleSources",
    "SplitSummary",
    "build_sample_set",
]
