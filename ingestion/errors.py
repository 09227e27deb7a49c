"""Errors of the image pipeline: loading, models and fusion."""

from __future__ import annotations

from clothes_search.errors import ClothesSearchError


class ImageError(ClothesSearchError):
    """An image could not be obtained or read. ``source`` names it for the user."""

    kind = "image_error"

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class ImageFetchError(ImageError):
    """The image could not be downloaded. ``status`` is the HTTP status, if one came back."""

    kind = "fetch_error"

    def __init__(self, message: str, *, source: str | None = None, status: int | None = None) -> None:
        super().__init__(message, source=source)
        self.status = status

    @property
    def transient(self) -> bool:
        """True when retrying later may succeed (5xx, 429, network errors)."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


class ImageFetchTimeoutError(ImageFetchError):
    kind = "fetch_timeout"


class UnsafeURLError(ImageFetchError):
    """The URL is refused by policy (SSRF guard, scheme, local files)."""

    kind = "unsafe_url"

    @property
    def transient(self) -> bool:
        return False


class ImageNotFoundError(ImageError):
    """A local image path does not exist or is not a file."""

    kind = "not_found"


class ImageTooLargeError(ImageError):
    """Too many bytes or too many pixels (decompression bomb)."""

    kind = "too_large"


class ImageDecodeError(ImageError):
    """The bytes are not a supported, intact image."""

    kind = "decode_error"


class ModelError(ClothesSearchError):
    kind = "model_error"


class ModelWeightsMissingError(ModelError):
    """A configured model's weights are not on this machine."""

    kind = "weights_missing"


class ModelConfigError(ModelError):
    """A model configuration is inconsistent (unknown architecture, wrong category count...)."""

    kind = "model_config"


class FusionError(ClothesSearchError):
    """Inputs to box fusion are malformed (weights, shapes)."""

    kind = "fusion_error"
