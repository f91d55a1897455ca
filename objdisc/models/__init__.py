"""Backbones: the model table, weights, position embeddings, and reading features out of a ViT."""
