"""ST-ViViT VQ-VAE video tokenizer: frames (B, T, H, W, 3) <-> tokens (B, T, h, w)."""

from tokenizer.model import VideoTokenizer

__all__ = ["VideoTokenizer"]
