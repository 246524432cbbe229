"""Sparse dictionaries: control whitening, ICFL and the TopK SAE, their training (resumable,
with checkpoints shared with the MAE) and the encoding of a whole token store."""
