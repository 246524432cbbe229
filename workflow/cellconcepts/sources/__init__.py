"""Where tokens come from in the demo: synthetic superposition embeddings, the scRNA autoencoder
on pbmc68k_reduced, and the simulated Cell Painting screen."""
