"""Request limits of the HTTP API (the views enforce them; the OpenAPI document states them)."""

MAX_CONTENT_LENGTH = 10 * 1024 * 1024  # larger request bodies answer 413
MAX_ROWS = 1000  # catalog rows per POST /items
