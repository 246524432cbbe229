"""The microscopy branch: a ViT encoder (OpenPhenom-compatible), its masked-autoencoder
training, token extraction per layer, layer choice, token heatmaps and the single-cell check."""
