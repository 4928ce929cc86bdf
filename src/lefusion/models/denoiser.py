"""The 3D U-Net noise predictor `eps = Denoiser(config)(x, t, cond)`.

Same function as the public LeFusion `Unet3D` (itself from video-diffusion models), written anew:
in-plane convolutions, depth attention with rotary + relative position bias, spatial linear
attention at every level, full spatial attention at the bottleneck, and the histogram condition
concatenated to the time embedding. Down/up-sampling is in-plane only, so D is never reduced and
H, W must be divisible by 2^(levels-1). The network knows nothing about diffusion.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import DenoiserConfig
from .attention import DepthAttention, SpatialAttention, SpatialLinearAttention
from .layers import PreNormResidual, ResnetBlock, TimeEmbedding, downsample, inplane, pointwise, upsample
from .position import RelativePositionBias, RotaryTable, channels_last


class UNetLevel(nn.Module):
    """Two ResNet blocks, spatial linear attention, depth attention, then a resampling layer."""

    def __init__(self, dim_in: int, dim_out: int, emb_dim: int, cfg: DenoiserConfig, resample: nn.Module) -> None:
        super().__init__()
        self.resnet1 = ResnetBlock(dim_in, dim_out, emb_dim, cfg.resnet_groups)
        self.resnet2 = ResnetBlock(dim_out, dim_out, emb_dim, cfg.resnet_groups)
        self.spatial_attention = PreNormResidual(dim_out, SpatialLinearAttention(dim_out, cfg.attn_heads))
        self.depth_attention = PreNormResidual(dim_out, DepthAttention(dim_out, cfg.attn_heads, cfg.attn_dim_head))
        self.resample = resample

    def features(self, x: torch.Tensor, emb: torch.Tensor, bias: torch.Tensor, rotary: RotaryTable) -> torch.Tensor:
        """Everything but the resampling layer: (B, dim_in, D, H, W) -> (B, dim_out, D, H, W)."""
        x = self.resnet2(self.resnet1(x, emb), emb)
        x = self.spatial_attention(x)
        return self.depth_attention(x, position_bias=bias, rotary=rotary)


class Bottleneck(nn.Module):
    def __init__(self, dim: int, emb_dim: int, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.resnet1 = ResnetBlock(dim, dim, emb_dim, cfg.resnet_groups)
        self.spatial_attention = PreNormResidual(dim, SpatialAttention(dim, cfg.attn_heads, cfg.attn_dim_head))
        self.depth_attention = PreNormResidual(dim, DepthAttention(dim, cfg.attn_heads, cfg.attn_dim_head))
        self.resnet2 = ResnetBlock(dim, dim, emb_dim, cfg.resnet_groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, bias: torch.Tensor, rotary: RotaryTable) -> torch.Tensor:
        x = self.spatial_attention(self.resnet1(x, emb))
        x = self.depth_attention(x, position_bias=bias, rotary=rotary)
        return self.resnet2(x, emb)


class Denoiser(nn.Module):
    """Noise predictor eps(x_t, t, cond).

    forward(x, t, cond):
        x:    (B, channels + extra_in_channels, D, H, W), the noisy volume in [-1, 1] units
        t:    (B,) int64 diffusion step indices in [0, T)
        cond: (B, cond_dim) or (cond_dim,) histogram condition; None uses the learned null condition
        ->    (B, channels, D, H, W) predicted noise

    Inside, activations are channels-last (memory order B, D, H, W, C); the output is contiguous.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = cfg = config
        dim = cfg.dim
        widths = [dim, *(dim * m for m in cfg.dim_mults)]
        pairs = list(zip(widths[:-1], widths[1:]))
        time_dim = 4 * dim
        emb_dim = time_dim + (cfg.cond_dim or 0)
        padding = cfg.init_kernel_size // 2

        self.depth_position_bias = RelativePositionBias(cfg.attn_heads, num_buckets=32, max_distance=32)
        self.init_conv = nn.Conv3d(
            cfg.channels + cfg.extra_in_channels,
            dim,
            (1, cfg.init_kernel_size, cfg.init_kernel_size),
            padding=(0, padding, padding),
        )
        self.init_depth_attention = PreNormResidual(dim, DepthAttention(dim, cfg.attn_heads, cfg.attn_dim_head))
        self.time_embedding = TimeEmbedding(dim)
        self.null_cond = nn.Parameter(torch.randn(1, cfg.cond_dim)) if cfg.cond_dim else None

        last = len(pairs) - 1
        self.encoder = nn.ModuleList(
            UNetLevel(w_in, w_out, emb_dim, cfg, downsample(w_out) if i < last else nn.Identity()) for i, (w_in, w_out) in enumerate(pairs)
        )
        self.middle = Bottleneck(widths[-1], emb_dim, cfg)
        self.decoder = nn.ModuleList(
            UNetLevel(2 * w_out, w_in, emb_dim, cfg, upsample(w_in) if i < last else nn.Identity())
            for i, (w_in, w_out) in enumerate(reversed(pairs))
        )
        self.final_resnet = ResnetBlock(2 * dim, dim, None, cfg.resnet_groups)
        self.final_conv = nn.Conv3d(dim, cfg.channels, 1)
        self._rotary: dict[tuple[int, torch.device], RotaryTable] = {}

    def rotary(self, depth: int, device: torch.device) -> RotaryTable:
        """The rotary table for this depth, computed once (it holds no learned values)."""
        key = (depth, torch.device(device))
        if key not in self._rotary:
            attn = self.init_depth_attention.fn
            self._rotary[key] = RotaryTable(depth, attn.rot_dim, attn.dim_head, device)
        return self._rotary[key]

    def embed(self, t: torch.Tensor, cond: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, 4*dim [+ cond_dim]) embedding: time embedding, then the condition (or the null one)."""
        emb = self.time_embedding(t)
        if self.null_cond is None:
            return emb
        if cond is None:
            cond = self.null_cond
        cond = cond.to(emb.dtype).reshape(-1, self.null_cond.shape[1]).expand(batch, -1)
        return torch.cat((emb, cond), dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        depth = x.shape[2]
        bias = self.depth_position_bias(depth, x.device)
        rotary = self.rotary(depth, x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.embed(t, cond, x.shape[0])

        x = inplane(channels_last(x), self.init_conv)
        first = x
        x = self.init_depth_attention(x, position_bias=bias, rotary=rotary)
        skips = []
        for level in self.encoder:
            x = level.features(x, emb, bias, rotary)
            skips.append(x)
            x = x if isinstance(level.resample, nn.Identity) else inplane(x, level.resample)
        x = self.middle(x, emb, bias, rotary)
        for level in self.decoder:
            x = level.features(torch.cat((x, skips.pop()), dim=1), emb, bias, rotary)
            x = x if isinstance(level.resample, nn.Identity) else inplane(x, level.resample)
        x = self.final_resnet(torch.cat((x, first), dim=1))
        return pointwise(x, self.final_conv).contiguous()


def compile_denoiser(net: Denoiser, mode: str | None = None) -> nn.Module:
    """`torch.compile` of a denoiser, for a loop that calls it with one input shape many times.

    mode: None (inductor's default; on CPU it needs a C++ compiler) or e.g. "max-autotune" on CUDA,
    which also captures CUDA graphs. Shapes are static: a new (B, C, D, H, W) compiles again. The
    compiled module shares the weights of `net`. Inside the compiled graph the network runs
    whole tensors instead of blocks (inductor fuses the element-wise work itself).
    """
    return torch.compile(net, mode=mode, dynamic=False)
