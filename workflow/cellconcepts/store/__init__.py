"""Stores the stages exchange: token stores (the contract between stages), image stores, the
per-token annotations, and readers of users' embeddings. See `store.layout` for file names."""
