"""The masked-autoencoder core shared by the image MAE ("mae") and the time-patch MAE ("mae_1d").

`TokenMAE` works on any tokens (B, P, token_dim): a learned position embedding, a small
pre-norm transformer encoder over the visible tokens only, a lighter decoder that gets the
encoded tokens plus a learned mask token at every hidden position, and a linear head that
predicts every token. Training hides a random `mask_ratio` of the tokens per item and step;
scoring is deterministic: the module holds `score_draws` FIXED masks (constant index buffers
drawn once from a seeded permutation, split into k = 1 / (1 - mask_ratio) disjoint visible
groups, so every token is hidden in the same number of draws) and averages each token's
squared error over the draws that hid it.

Everything in `forward`-side methods exports to plain ONNX ops (attention written out,
constant Gather indices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

#: seed of the fixed scoring masks (part of the graph, so not a training seed).
MASK_SEED = 1234


def mask_groups(mask_ratio: float) -> int:
    """k = 1 / (1 - mask_ratio) rounded (0 when mask_ratio >= 1); callers check it is whole."""
    return int(round(1.0 / (1.0 - mask_ratio))) if mask_ratio < 1 else 0


def is_whole_groups(mask_ratio: float) -> bool:
    """True when 0 < mask_ratio < 1 and 1 / (1 - mask_ratio) is a whole number (0.5, 0.75...)."""
    k = mask_groups(mask_ratio)
    return 0.0 < mask_ratio < 1.0 and k >= 1 and abs(1.0 / (1.0 - mask_ratio) - k) < 1e-6


def token_mae_sizes_ok(cfg: Any) -> bool:
    """Whether the fields every token MAE config shares can work: k = 1 / (1 - mask_ratio) a
    whole number, score_draws a positive multiple of k, num_heads >= 1 dividing embed_dim and
    decoder_dim, both depths >= 1 (MAEConfig, MAE1dConfig; each checks its own token count)."""
    k = mask_groups(cfg.mask_ratio)
    return (
        is_whole_groups(cfg.mask_ratio)
        and cfg.score_draws >= k
        and cfg.score_draws % k == 0
        and cfg.num_heads >= 1
        and cfg.embed_dim % cfg.num_heads == 0
        and cfg.decoder_dim % cfg.num_heads == 0
        and min(cfg.depth, cfg.decoder_depth) >= 1
    )


def transformer_sizes(cfg: Any) -> dict[str, int]:
    """TokenMAE's keyword sizes from a config holding embed_dim, depth, num_heads,
    decoder_dim, decoder_depth, score_draws and a `groups` property (MAEConfig, MAE1dConfig)."""
    names = ("embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth", "score_draws")
    return {**{name: int(getattr(cfg, name)) for name in names}, "groups": int(cfg.groups)}


class Block(nn.Module):
    """Pre-norm transformer block (attention written out, so it exports to plain ONNX ops)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, T, dim)."""
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, d_head)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


def fixed_masks(n_tokens: int, groups: int, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The scoring masks, drawn from a permutation seeded with MASK_SEED.

    Args:
        n_tokens: P, divisible by `groups`.
        groups: k = 1 / (1 - mask_ratio): each permutation gives k draws with disjoint visible
            sets of P / k tokens.
        draws: K, a multiple of `groups`.

    Returns:
        (order int64 (K, P): visible token ids first (sorted), then hidden ones (sorted);
        hidden float32 (K, P): 1 where draw K hides the token).
    """
    gen = torch.Generator().manual_seed(MASK_SEED)
    per_group = n_tokens // groups
    orders = []
    for _ in range(draws // groups):
        perm = torch.randperm(n_tokens, generator=gen)
        for i in range(groups):
            keep = perm[i * per_group : (i + 1) * per_group]
            rest = torch.cat([perm[: i * per_group], perm[(i + 1) * per_group :]])
            orders.append(torch.cat([keep.sort().values, rest.sort().values]))
    order = torch.stack(orders)
    hidden = torch.ones(len(orders), n_tokens)
    hidden.scatter_(1, order[:, :per_group], 0.0)
    return order, hidden


class TokenMAE(nn.Module):
    """Masked autoencoder over tokens (B, P, token_dim); see the module docstring.

    Parameter names (embed, pos, encoder, enc_norm, to_decoder, mask_token, dec_pos, decoder,
    dec_norm, to_pixels) are those of stored image-MAE runs; `to_pixels` is the output head
    whatever the tokens are.
    """

    def __init__(
        self,
        n_tokens: int,
        token_dim: int,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_dim: int,
        decoder_depth: int,
        groups: int,
        score_draws: int,
    ) -> None:
        super().__init__()
        self.n_keep = n_tokens // groups
        self.embed = nn.Linear(token_dim, embed_dim)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, embed_dim) * 0.02)
        self.encoder = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.enc_norm = nn.LayerNorm(embed_dim)
        self.to_decoder = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.dec_pos = nn.Parameter(torch.randn(1, n_tokens, decoder_dim) * 0.02)
        self.decoder = nn.Sequential(*[Block(decoder_dim, num_heads) for _ in range(decoder_depth)])
        self.dec_norm = nn.LayerNorm(decoder_dim)
        self.to_pixels = nn.Linear(decoder_dim, token_dim)
        order, hidden = fixed_masks(n_tokens, groups, score_draws)
        self.register_buffer("keep", order[:, : self.n_keep].contiguous(), persistent=False)
        self.register_buffer("restore", order.argsort(dim=1), persistent=False)
        self.register_buffer("hidden", hidden, persistent=False)
        self.register_buffer("hidden_count", hidden.sum(dim=0), persistent=False)

    def _decode(
        self, visible: torch.Tensor, restore: torch.Tensor | None, index: torch.Tensor | None
    ) -> torch.Tensor:
        """Tokens (B, P, token_dim) from encoded visible tokens (B, n_keep, D): mask tokens
        appended, put back in token order (constant `restore` (P,), or per-item `index`)."""
        b = visible.shape[0]
        n_hidden = self.pos.shape[1] - visible.shape[1]
        full = torch.cat([self.to_decoder(visible), self.mask_token.expand(b, n_hidden, -1)], 1)
        if restore is not None:
            full = full.index_select(1, restore)
        elif index is not None:
            full = torch.gather(full, 1, index.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        return self.to_pixels(self.dec_norm(self.decoder(full + self.dec_pos)))

    def predict_fixed(self, tokens: torch.Tensor, draw: int) -> torch.Tensor:
        """Predicted tokens (B, P, token_dim) seeing only the visible tokens of fixed draw
        `draw` (constant indices: plain Gather ops in the exported graph)."""
        embedded = self.embed(tokens) + self.pos
        encoded = self.enc_norm(self.encoder(embedded.index_select(1, self.keep[draw])))
        return self._decode(encoded, self.restore[draw], None)

    def train_losses(self, tokens: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-item (B,) mean squared error of the hidden tokens under a fresh random mask per
        item (`generator`: seeded; None = torch's global generator)."""
        b, n_tokens = tokens.shape[0], tokens.shape[1]
        order = torch.rand(b, n_tokens, generator=generator).argsort(dim=1)
        keep = order[:, : self.n_keep]
        embedded = self.embed(tokens) + self.pos
        index = keep.unsqueeze(-1).expand(-1, -1, embedded.shape[-1])
        visible = torch.gather(embedded, 1, index)
        pred = self._decode(self.enc_norm(self.encoder(visible)), None, order.argsort(dim=1))
        hidden = torch.ones(b, n_tokens).scatter_(1, keep, 0.0)
        err = ((pred - tokens) ** 2).mean(dim=-1)
        return (err * hidden).sum(dim=1) / hidden.sum(dim=1)

    def hidden_errors(
        self, tokens: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """float32 (B, P, ...): `reduce` of each draw's squared errors (B, P, token_dim) ->
        (B, P, ...), averaged per token over the fixed draws that hid it."""
        errors = torch.stack(
            [
                reduce((self.predict_fixed(tokens, k) - tokens) ** 2)
                for k in range(self.keep.shape[0])
            ],
            dim=1,
        )  # (B, K, P, ...)
        weights = self.hidden / self.hidden_count  # (K, P)
        weights = weights.reshape(*weights.shape, *([1] * (errors.dim() - 3)))
        return (errors * weights).sum(dim=1)
