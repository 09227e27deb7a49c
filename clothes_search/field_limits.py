"""Sizes of catalog fields in UTF-8 bytes: what the vector store's columns hold.

Milvus counts a VARCHAR's ``max_length`` and a JSON value's size in bytes, not characters, so a
feed row is checked against these same numbers when it is validated (``ingestion.feed``) and again
when it is written (``db.vector_records``, ``db.vector_schema``): a row the store would refuse never
reaches a batch.
"""

from __future__ import annotations

SKU_BYTES = 256  #: the crop rows' ``item_key``
CATEGORY_BYTES = 64
BRAND_BYTES = 128
ATTRIBUTE_TEXT_BYTES = 256  #: a string attribute (a declared attribute is a VARCHAR of this size)
ATTRIBUTES_JSON_BYTES = 65_536  #: Milvus' largest JSON value


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (lone surrogates counted as their 3-byte encodings)."""
    return len(text.encode("utf-8", "surrogatepass"))
