"""ST-ViViT VQ-VAE video tokenizer: frames (B, T, H, W, 3) <-> tokens (B, T, h, w).

Letters: B batch, T frames, H W pixels, h w token grid.
"""

from tokenizer.model import VideoTokenizer

__all__ = ["VideoTokenizer"]
