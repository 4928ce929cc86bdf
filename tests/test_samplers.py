"""The samplers of diffusion.sampling on a tiny network: background exact, same seed same output,
the evaluations they report are the ones they make, the few-step grid and plans, the math against
ancestral sampling, and sampling without a known region."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lefusion.config import ScheduleConfig
from lefusion.diffusion.process import renoise
from lefusion.diffusion.sampling import (
    DDIM,
    DDNM,
    DEFAULT_FEW_STEP,
    SAMPLERS,
    Ancestral,
    DiffPIR,
    FewStep,
    KnownRegion,
    Network,
    Noise,
    TimeTravel,
    sampler_from_dict,
)
from lefusion.diffusion.sampling.fewstep import grid_plan, renoise_between, step_grid
from lefusion.diffusion.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 1, 4, 8, 8)
T = 12
EVERY = [
    Ancestral(),
    TimeTravel(3, 2),
    DDIM(4),
    DDIM(4, eta=1.0),
    DDIM(5, 2, 2, eta=0.5),
    DDNM(4),
    DDNM(5, 1, 3, eta=0.0),
    DiffPIR(4),
    DiffPIR(5, 2, 2, zeta=1.0),
]


class Toy(torch.nn.Module):
    """A deterministic stand-in for the denoiser: (x (B, C, D, H, W), t (B,), cond) -> eps-like (B, C, D, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)
        torch.nn.init.constant_(self.conv.weight, 0.02)
        torch.nn.init.zeros_(self.conv.bias)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.conv(x)) + 0.01 * t.view(-1, 1, 1, 1, 1)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(ScheduleConfig(timesteps=T))


def known_region(noise: str = "fresh") -> KnownRegion:
    g = torch.Generator().manual_seed(5)
    values = torch.rand(SHAPE, generator=g) * 2 - 1
    generate = torch.zeros(SHAPE, dtype=torch.bool)
    generate[:, :, 1:3, 2:6, 2:6] = True
    return KnownRegion(values, generate, noise=noise)


def run(sampler, schedule, seed: int = 0, known: KnownRegion | None = None, net: Toy | None = None) -> torch.Tensor:
    net = net or Toy()
    gens = [torch.Generator().manual_seed(seed + i) for i in range(SHAPE[0])]
    with torch.no_grad():
        return sampler.sample(Network(net), schedule, SHAPE, Noise(gens), known)


@pytest.mark.parametrize("sampler", EVERY, ids=repr)
@pytest.mark.parametrize("noise", ["fresh", "shared"])
def test_background_is_bit_exact(sampler, noise, schedule):
    known = known_region(noise)
    x = run(sampler, schedule, known=known)
    assert torch.equal(x[~known.generate], known.values[~known.generate])
    assert torch.isfinite(x).all() and not torch.equal(x[known.generate], known.values[known.generate])


@pytest.mark.parametrize("sampler", EVERY, ids=repr)
def test_same_seed_same_output_other_seed_other_output(sampler, schedule):
    known = known_region()
    a, b, c = run(sampler, schedule, 0, known), run(sampler, schedule, 0, known), run(sampler, schedule, 1, known)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("sampler", EVERY, ids=repr)
def test_evaluations_reported_are_the_evaluations_made(sampler, schedule):
    net = Toy()
    run(sampler, schedule, known=known_region(), net=net)
    assert net.calls == sampler.network_evaluations(T)


@pytest.mark.parametrize("sampler", EVERY, ids=repr)
def test_samples_without_a_known_region(sampler, schedule):
    """Cond-Diffusion's case: no known region, the whole volume is generated."""
    x = run(sampler, schedule)
    assert x.shape == SHAPE and torch.isfinite(x).all() and x.abs().max() <= 1.0


def test_few_step_evaluations_are_the_steps(schedule):
    assert [DDNM(k).network_evaluations(T) for k in (1, 5, 12, 25)] == [1, 5, 12, 12]  # capped at T
    assert DDIM(10, 1, 2).network_evaluations(100) == 19  # one back-and-forth at 9 of the 10 levels
    assert DDIM(10, 5, 2).network_evaluations(100) == 15  # resampling at one level only
    assert DDNM(25, 5, 2).network_evaluations(300) == 45


@pytest.mark.parametrize("timesteps,steps", [(100, 5), (300, 25), (300, 50), (50, 10), (7, 3), (10, 10), (4, 25)])
def test_step_grid_starts_at_the_top_and_is_even(timesteps, steps):
    grid = step_grid(timesteps, steps)
    assert len(grid) == min(steps, timesteps) and grid[-1] == timesteps - 1 and grid[0] >= 0
    gaps = [b - a for a, b in zip(grid[:-1], grid[1:])]
    assert all(g >= 1 for g in gaps) and max(gaps) - min(gaps) <= 1
    assert step_grid(timesteps, timesteps) == list(range(timesteps))


def test_resampling_plan_walks_the_grid():
    grid = [-1, *step_grid(100, 10)]
    moves = grid_plan(100, 10, 2, 3)
    assert moves[0][0] == 99 and moves[-1][1] == -1
    for (a, b), (c, _) in zip(moves[:-1], moves[1:]):
        assert b == c and abs(grid.index(a) - grid.index(b)) == 1  # one grid level per move
    assert sum(1 for a, b in moves if b > a) == 4 * 2 * 2  # jump points 0, 2, 4, 6; 2 extra passes of 2 levels


def test_ddim_with_eta_one_on_every_level_is_ancestral_sampling(schedule):
    """Eq. 12 with eq. 16's sigma (eta = 1) and s = t - 1 is the DDPM posterior step; with the same
    draws (known region, then step) the two samplers agree to float rounding."""
    known = known_region()
    a, b = run(Ancestral(), schedule, known=known), run(DDIM(T, eta=1.0), schedule, known=known)
    assert (a - b).abs().max() < 1e-5


def test_renoise_between_neighbours_is_the_one_step_jump(schedule):
    x, z = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.full((SHAPE[0],), 7)
    assert torch.allclose(renoise_between(schedule, x, 6, t, z), renoise(schedule, x, t, z), atol=1e-6)


def test_projecting_samplers_ignore_the_network_outside_the_lesion(schedule):
    """A lesion-focused model is never trained outside the mask: DDNM and DiffPIR must not depend
    on what it predicts there (the estimate is projected and eps derived from it)."""

    class Garbage(Toy):
        def forward(self, x, t, cond):
            out = super().forward(x, t, cond)
            return torch.where(known_region().generate, out, torch.full_like(out, 1e3))

    known = known_region()
    for sampler in (DDNM(4), DiffPIR(4), DDIM(4)):
        assert torch.equal(run(sampler, schedule, known=known, net=Garbage()), run(sampler, schedule, known=known, net=Toy())), sampler


def test_deterministic_settings_depend_on_x_T_only(schedule):
    """DDNM with eta = 0 and DiffPIR with zeta = 0 add no noise after x_T: later draws change nothing."""

    class SameFirstDraw:
        """x_T from seed 3, every later draw from `later` (duck-types Noise)."""

        def __init__(self, later: int) -> None:
            self.first, self.later = torch.Generator().manual_seed(3), torch.Generator().manual_seed(later)
            self.drawn = 0

        def __call__(self, shape):
            self.drawn += 1
            return torch.randn(tuple(shape), generator=self.first if self.drawn == 1 else self.later)

    known = known_region()
    for sampler in (DDNM(4, eta=0.0), DiffPIR(4, zeta=0.0)):
        with torch.no_grad():
            a, b = (sampler.sample(Network(Toy()), schedule, SHAPE, SameFirstDraw(later), known) for later in (1, 2))
        assert torch.equal(a, b), sampler
    with torch.no_grad():
        a, b = (DDNM(4).sample(Network(Toy()), schedule, SHAPE, SameFirstDraw(later), known) for later in (1, 2))
    assert not torch.equal(a, b), "eta = 1 does use the later draws"


@pytest.mark.parametrize("sampler", [s for s in EVERY if isinstance(s, FewStep)], ids=repr)
def test_records_round_trip_and_settings_are_frozen(sampler):
    assert sampler_from_dict(sampler.to_dict()) == sampler
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "record",
    [{"kind": "ddim", "steps": 0}, {"kind": "ddim", "eta": 1.5}, {"kind": "ddnm", "jump_n_sample": 0}, {"kind": "diffpir", "zeta": -0.1}],
)
def test_bad_settings_are_refused(record):
    with pytest.raises(ValueError):
        sampler_from_dict(record)


def test_registry_and_default():
    assert {"ancestral", "time-travel", "ddim", "ddnm", "diffpir"} <= set(SAMPLERS)
    assert type(DEFAULT_FEW_STEP).kind in SAMPLERS and isinstance(DEFAULT_FEW_STEP, FewStep)
    with pytest.raises(ValueError, match="has no setting"):
        sampler_from_dict({"kind": "ancestral", "steps": 10})
