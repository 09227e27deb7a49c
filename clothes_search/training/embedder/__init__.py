"""Metric learning for consumer-to-shop retrieval: an embedding head (and optionally the backbone's last
blocks) trained on ground-truth garment crops, so a street photo's garment lands next to its shop photos.

Modules: :mod:`crops` (labelled crops of a split), :mod:`augment` (street-vs-shop augmentations),
:mod:`sampler` (P×K batches), :mod:`losses` (ArcFace, CosFace, batch-hard triplet, multi-similarity),
:mod:`model` (backbone + projection head), :mod:`features` (cached backbone features of augmented views),
:mod:`recall` (recall@k on the validation split), :mod:`checkpoint` (the file format) and :mod:`train`.
"""
