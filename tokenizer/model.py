"""ST-ViViT VQ-VAE video tokenizer, causal in time: tokens of frame t depend on frames <= t only.

Letters: B batch, T frames, H W pixels, h w token grid (H/patch), N = h*w, D width, C code dim.

    frames (B,T,H,W,3) uint8 -> patches (B,T,N,p*p*3) -> ST encoder -> (B,T,N,C) -> VQ -> tokens (B,T,h,w)
    tokens -> codes (B,T,N,C) -> ST decoder -> patches -> frames in [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genie.core.blocks import STTransformer, init_weights, patchify, unpatchify
from genie.core.cache import KVCache
from genie.core.config import TokenizerConfig
from genie.core.frames import to_float, to_uint8
from genie.core.vq import VectorQuantizer


class VideoTokenizer(nn.Module):
    kind = "tokenizer"

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        N, D, patch_dim = cfg.grid**2, cfg.d_model, cfg.patch * cfg.patch * 3
        # --- encoder ---
        self.enc_in = nn.Linear(patch_dim, D)
        self.enc_pos = nn.Parameter(torch.zeros(N, D))
        self.encoder = STTransformer(D, cfg.depth, cfg.heads, cfg.context)
        self.enc_out = nn.Linear(D, cfg.code_dim)
        self.vq = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.commitment)
        # --- decoder ---
        self.dec_in = nn.Linear(cfg.code_dim, D)
        self.dec_pos = nn.Parameter(torch.zeros(N, D))
        self.decoder = STTransformer(D, cfg.depth, cfg.heads, cfg.context)
        self.dec_out = nn.Linear(D, patch_dim)
        init_weights(self, 2 * cfg.depth)
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)

    def _latents(self, frames: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = patchify(to_float(frames), self.cfg.patch)  # (B, T, N, p*p*3)
        x = self.enc_in(x) + self.enc_pos
        return self.enc_out(self.encoder(x, cache))  # (B, T, N, C)

    def _decode_codes(self, codes: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = self.dec_in(codes) + self.dec_pos
        patches = self.dec_out(self.decoder(x, cache))  # (B, T, N, p*p*3)
        g = self.cfg.grid
        return unpatchify(patches, self.cfg.patch, g, g)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """frames (B, T, H, W, 3) -> tokens (B, T, h, w) int64."""
        B, T = frames.shape[:2]
        tokens = self.vq.nearest(self._latents(frames, cache))
        return tokens.view(B, T, self.cfg.grid, self.cfg.grid)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """tokens (B, T, h, w) -> frames (B, T, H, W, 3) float in [0, 1] (unclamped).

        With a cache, `tokens` are the frames after those already decoded (exact, see genie.core.blocks)."""
        B, T = tokens.shape[:2]
        codes = self.vq.lookup(tokens.reshape(B, T, -1))
        return self._decode_codes(codes, cache)

    def forward(self, frames: torch.Tensor) -> dict:
        target = to_float(frames)
        vq = self.vq(self._latents(frames))
        recon = self._decode_codes(vq["quantized"])
        recon_loss = F.mse_loss(recon, target)
        return {
            "loss": recon_loss + vq["loss"],
            "recon_loss": recon_loss.detach(),
            "vq_loss": vq["loss"].detach(),
            "perplexity": vq["perplexity"].detach(),
            "active_codes": vq["active_codes"].detach().float(),
            "recon": recon.detach(),
        }

    def compute_loss(self, batch: dict) -> dict:
        return self(batch["frames"])

    @torch.no_grad()
    def preview(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(ground truth, reconstruction) uint8 (T, H, W, 3) of the first window, for PNG strips."""
        frames = batch["frames"][:1]
        recon = self._decode_codes(self.vq.lookup(self.vq.nearest(self._latents(frames))))
        return to_uint8(to_float(frames)[0]), to_uint8(recon[0])
