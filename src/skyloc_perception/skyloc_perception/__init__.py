"""Camera image to place descriptor: query normalisation, ViT/RootSIFT backbones,
VLAD, and the embedder node."""
