"""Time-travel ("jump") schedule of RePaint resampling (Lugmayr et al. 2022, sec. 4.2, Alg. 1).

Sampling walks the step index down from T-1 to -1. Every `jump_length` steps (at indices that are
multiples of jump_length below T - jump_length) it walks back up `jump_length` steps, and does so
`jump_n_sample - 1` times per such index, so that known and generated regions can harmonise.
A move down is one network evaluation; a move up is one re-noising step.
"""

from __future__ import annotations


def jump_schedule(timesteps: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """The visited step indices, starting at T-1 and ending at -1 (consecutive entries differ by 1)."""
    if timesteps < 1 or jump_length < 1 or jump_n_sample < 1:
        raise ValueError("timesteps, jump_length and jump_n_sample must be positive")
    jumps_left = {t: jump_n_sample - 1 for t in range(0, timesteps - jump_length, jump_length)}
    t = timesteps
    visited: list[int] = []
    while t >= 1:
        t -= 1
        visited.append(t)
        if jumps_left.get(t, 0) > 0:
            jumps_left[t] -= 1
            for _ in range(jump_length):
                t += 1
                visited.append(t)
    visited.append(-1)
    return visited


def count_network_evaluations(schedule: list[int]) -> int:
    """Number of denoising steps (moves to a smaller index) in a jump schedule."""
    return sum(1 for a, b in zip(schedule[:-1], schedule[1:]) if b < a)
