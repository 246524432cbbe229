"""cellconcepts: sparse dictionary learning on biology foundation-model embeddings."""

__version__ = "0.1.0"
