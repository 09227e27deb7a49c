"""Offline evaluation: the DeepFashion2 clothes-retrieval protocol and report writers.

Pure Python + numpy; nothing here touches the database, the vector store or a model.

- :mod:`.deepfashion2` reads a DeepFashion2 split (``image/`` + ``annos/``);
- :mod:`.protocol` scores ranked retrieval results against its consumer-to-shop pairs;
- :mod:`.report` writes the Markdown table, the JSON record and the top-k plot.
"""
