"""What every sampler here shares: the network as a sampler sees it, the known region, the noise
source, and the one reverse loop (`SamplerConfig.sample`).

A sampler is a frozen dataclass of its settings (its `SamplerConfig`), so it holds no state
between calls. It says which moves to make (`plan`: pairs of step indices, from T-1 down to -1,
where -1 is the clean sample; a move may skip levels, (t, s) with s < t - 1, as few-step samplers
do) and how to make one move down (`down`: one network evaluation) or up (`up`: re-noising, for
time travel and resampling). The loop is written once, here:

- x_T is drawn from N(0, I);
- the known region (when there is one) enters by the sampler's `known_rule`:
  "renoise" (the default): before every move down at level t it is put back in at that level,
  x_t = where(generate, x_t, q(x_known, t)) (RePaint, Lugmayr et al. 2022, eq. 8);
  "project": after every network evaluation the estimate of x0 takes the known values,
  x0 = where(generate, x0, x_known) (the range-null-space decomposition of DDNM, Wang et al.
  2023, eq. 13, with A = A^+ = the known voxels' selection; DiffPIR's data step, Zhu et al. 2023,
  eq. 13, for a noise-free measurement), and x_t is left as the sampler's last move made it;
- after the last move the known region is pasted back as it is, so the voxels outside the region
  being generated come back bit for bit, whatever the sampler.

LeFusion inpainting (known = the real image outside the lesion), DiffMask (known = background
outside the boundary) and the Cond-Diffusion baseline (no known region) all run this loop.

Tensors are (B, C, D, H, W); t is (B,) int64 step indices (0-based, as in `schedule.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import torch

from ...config import Prediction
from ..channels import with_context
from ..process import predict_eps, predict_x0, predict_x0_from_v, q_sample
from ..schedule import NoiseSchedule

ProgressFn = Callable[[int, int], None]
Generators = torch.Generator | Sequence[torch.Generator]


class Estimate(NamedTuple):
    """The network's estimate at level t: the clean sample x0 and the noise eps, (B, C, D, H, W) each."""

    x0: torch.Tensor
    eps: torch.Tensor


@dataclass(frozen=True, eq=False)
class Network:
    """The denoiser with what stays fixed during one sampling run.

    denoiser(input (B, C + E, D, H, W), t (B,), cond) -> (B, C, D, H, W) in the `prediction`
    parameterisation; cond: (B, cond_dim) or None (the learned null condition); context: (B, E, D,
    H, W) channels appended to x_t at every step (mask channels, Cond-Diffusion's masked image,
    DiffMask's control region) or None.
    """

    denoiser: torch.nn.Module
    cond: torch.Tensor | None = None
    context: torch.Tensor | None = None
    prediction: Prediction = "eps"

    def estimate(self, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor) -> Estimate:
        """One network evaluation at level t, as (x0, eps) whatever the network predicts (eq. 4 of
        Ho et al. 2020 relates the two; for v, Salimans & Ho 2022, sec. 4)."""
        out = self.denoiser(with_context(x_t, self.context), t, self.cond)
        if self.prediction == "eps":
            return Estimate(predict_x0(schedule, x_t, t, out), out)
        x0 = out if self.prediction == "x0" else predict_x0_from_v(schedule, x_t, t, out)
        return Estimate(x0, predict_eps(schedule, x_t, t, x0))


@dataclass(frozen=True, eq=False)
class KnownRegion:
    """The voxels a sampler does not generate.

    values: x0 of the known voxels, (B, C, D, H, W) or broadcastable to the sample; generate: bool,
    broadcastable to the sample, True where the sampler generates. noised: show the known voxels at
    the current noise level (RePaint's rule, which keeps the network's input in distribution) or as
    they are. noise: "fresh" draws new noise for them before every move down (RePaint, the public
    LeFusion release); "shared" reuses the noise drawn last (for x_T, or the previous move), which
    is independent of the generated voxels' noise because the two regions are disjoint, and saves
    one draw per step (DiffMask). `noised` and `noise` concern samplers that re-noise the known
    region (`known_rule` "renoise"); a projecting sampler uses `values` as x0 and draws nothing for
    them.
    """

    values: torch.Tensor
    generate: torch.Tensor
    noised: bool = True
    noise: Literal["fresh", "shared"] = "fresh"

    def at_level(self, schedule: NoiseSchedule, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The known voxels at level t: q(x_t | x_0) = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, or x0."""
        return q_sample(schedule, self.values, t, noise) if self.noised else self.values

    def impose(self, x: torch.Tensor, schedule: NoiseSchedule, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.where(self.generate, x, self.at_level(schedule, t, noise))

    def paste(self, x: torch.Tensor) -> torch.Tensor:
        """The final sample: generated voxels from x, known voxels exactly as given."""
        return torch.where(self.generate, x, self.values)


@dataclass(frozen=True, eq=False)
class Noise:
    """Standard normal draws for a batch, from one generator for the whole batch or one per sample
    (then sample i's noise depends on generator i only, so an output does not depend on which other
    samples share its batch). Draws happen on each generator's device and are moved to `device`."""

    generators: Generators
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32

    def __call__(self, shape: Sequence[int]) -> torch.Tensor:
        g = self.generators
        if isinstance(g, torch.Generator):
            out = torch.randn(tuple(shape), generator=g, device=g.device, dtype=self.dtype)
        else:
            if len(g) != shape[0]:
                raise ValueError(f"got {len(g)} generators for a batch of {shape[0]}")
            out = torch.stack([torch.randn(tuple(shape[1:]), generator=one, device=one.device, dtype=self.dtype) for one in g])
        return out.to(self.device)


Move = tuple[int, int]  # (from step index, to step index); -1 is the clean sample
KnownRule = Literal["renoise", "project"]


class Sampler(Protocol):
    """What a generation method needs from a sampler: it produces a sample and says what it costs."""

    kind: ClassVar[str]

    def sample(
        self,
        network: Network,
        schedule: NoiseSchedule,
        shape: Sequence[int],
        noise: Noise,
        known: KnownRegion | None = None,
        progress: ProgressFn | None = None,
    ) -> torch.Tensor: ...

    def network_evaluations(self, timesteps: int) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SamplerConfig:
    """Base of every sampler: its settings as frozen fields, `kind` naming it in manifests.

    Subclasses define `plan` and `down` (and `up` if their plan moves up); `sample` is the one
    reverse loop (module docstring).
    """

    kind: ClassVar[str] = ""
    known_rule: ClassVar[KnownRule] = "renoise"  # how the known region enters (module docstring)

    def plan(self, timesteps: int) -> list[Move]:
        raise NotImplementedError

    def down(
        self, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, to: int, estimate: Estimate, noise: torch.Tensor
    ) -> torch.Tensor:
        """x_t at level t (B,) -> x at level `to` (< t), given the network's estimate and fresh noise."""
        raise NotImplementedError

    def up(self, schedule: NoiseSchedule, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, frm: int) -> torch.Tensor:
        """x at level `frm` (< t) -> level t (B,): re-noising."""
        raise NotImplementedError(f"the {self.kind} sampler does not move up")

    def canonical(self) -> SamplerConfig:
        """The simplest sampler that makes exactly the same moves and draws (what manifests record)."""
        return self

    def network_evaluations(self, timesteps: int) -> int:
        return sum(1 for a, b in self.plan(timesteps) if b < a)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def sample(
        self,
        network: Network,
        schedule: NoiseSchedule,
        shape: Sequence[int],
        noise: Noise,
        known: KnownRegion | None = None,
        progress: ProgressFn | None = None,
    ) -> torch.Tensor:
        """Run the reverse loop; returns the sample (shape), known voxels pasted back exactly.
        progress(done, total) is called after every move."""
        moves = self.plan(schedule.num_timesteps)
        x = last = noise(shape)
        for done, (t_from, t_to) in enumerate(moves, start=1):
            if t_to < t_from:
                t = torch.full((shape[0],), t_from, device=x.device, dtype=torch.long)
                x, last = reverse_step(self, network, schedule, x, t, t_to, known, noise, last)
            else:
                t = torch.full((shape[0],), t_to, device=x.device, dtype=torch.long)
                last = noise(shape)
                x = self.up(schedule, x, t, last, t_from)
            if progress is not None:
                progress(done, len(moves))
        return x if known is None else known.paste(x)


def reverse_step(
    sampler: SamplerConfig,
    network: Network,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    to: int,
    known: KnownRegion | None,
    noise: Noise | Callable[[Sequence[int]], torch.Tensor],
    last_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One move down of the loop: the known region in by the sampler's rule (at level t before the
    evaluation, or into the x0 estimate after it), one network evaluation, the sampler's step to
    level `to`. Returns (x at `to`, the step's noise). Draw order: the known region's noise (when
    it is re-noised and fresh), then the step's."""
    renoise = known is not None and sampler.known_rule == "renoise"
    if renoise:
        known_noise = noise(x_t.shape) if known.noise == "fresh" or last_noise is None else last_noise
        x_t = known.impose(x_t, schedule, t, known_noise)
    estimate = network.estimate(schedule, x_t, t)
    if known is not None and not renoise:
        estimate = Estimate(known.paste(estimate.x0), estimate.eps)
    step_noise = noise(x_t.shape)
    return sampler.down(schedule, x_t, t, to, estimate, step_noise), step_noise
