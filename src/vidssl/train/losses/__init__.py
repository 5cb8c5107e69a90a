"""Losses as plain functions of tensors: each testable on its own, each a method's building
block (vidssl.train.methods)."""

from vidssl.train.losses.contrastive import info_nce, nt_xent
from vidssl.train.losses.pixel import pixel_info_nce, same_point_mask, sample_features
from vidssl.train.losses.siamese import negative_cosine, simsiam_loss
from vidssl.train.losses.triplet import triplet_margin

__all__ = [
    "info_nce",
    "negative_cosine",
    "nt_xent",
    "pixel_info_nce",
    "same_point_mask",
    "sample_features",
    "simsiam_loss",
    "triplet_margin",
]
