"""Benchmarks on exported embeddings: zero-shot 9-DoF pose by box fitting, re-identification,
category accuracy, retrieval; and for dense (per-pixel) embeddings, correspondence (PCK) and
linear-probe segmentation (mIoU) in `dense`."""
