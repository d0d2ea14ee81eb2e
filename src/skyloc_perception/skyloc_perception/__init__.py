"""Camera image to place descriptor: query normalisation, ViT/RootSIFT backbones, VLAD, the embedder node."""
