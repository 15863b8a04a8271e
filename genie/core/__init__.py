"""genie.core: the floor every model and tool stands on. It imports nothing of genie above it.

    blocks.py   the ST-transformer (spatial attention, causal temporal attention, FFN), RoPE, patches
    cache.py    the temporal caches behind one interface (none, growing KVCache, fixed-shape ring)
    vq.py       vector quantizer (straight-through, usage tracking, dead-code reset, k-means start)
    kernels/    fused Triton kernels beside their plain PyTorch references, and the dispatch between them
    config.py   model configs (dataclasses) and their named presets
    frames.py   the one pixel policy: uint8 <-> float, fitting any image to a square frame
    io.py       atomic writes and the {"format", "version"} headers of every file genie writes
    errors.py   the errors a user can cause, each one sentence that names the fix

Dimension letters, the same in every file of the project (each file repeats the ones it uses):

    B     batch: parallel sequences, worlds or windows
    T     frames in a clip or chunk; Tp frames already held by a temporal cache, Tk = Tp + T keys
    H, W  frame height and width in pixels; frames are (B, T, H, W, 3) RGB
    h, w  token grid of a frame (H / patch, W / patch)
    N     tokens per frame: h * w, plus one when an action token is prepended
    D     model width
    nh    attention heads; K head dim (D = nh * K)
    V     vocabulary: tokenizer codes (token id V is MASK)
    C     code dim: a VQ code or a latent action vector
    A     number of latent actions
    E     episodes of a dataset
    L     sequence length of one attention call (Lq queries, Lk keys); M rows of a flattened matrix

Never letters, always words: `window` (frames one temporal query sees, itself included), `slots`
(frames a ring cache holds, window - 1), `steps` (MaskGIT refinement steps), `size` (image side).
"""
