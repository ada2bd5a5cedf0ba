"""Counter-based random numbers: SplitMix64 of ``(seed, index, stream)``, vectorised in uint64.

Unlike a sequential generator, the numbers of item ``index`` do not depend on how many items
were drawn before it, so any slice of a procedural dataset (or of a fixed permutation) can be
produced on its own and is identical forever, whatever numpy version is installed.
"""

from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_INDEX_MUL = np.uint64(0xD1B54A32D192ED03)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, applied element-wise to a fresh uint64 array (in place)."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def mix64_int(x: int) -> int:
    """SplitMix64's finaliser on one Python integer (taken modulo 2^64)."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """Combine integers (e.g. a seed and an epoch) into one well-mixed seed in [0, 2^63)."""
    h = 0x243F6A8885A308D3
    for part in parts:
        h = mix64_int(h ^ mix64_int(int(part) + 0x632BE59BD9B4E019))
    return h >> 1


def uniforms(seed: int, index: np.ndarray, streams: int) -> np.ndarray:
    """Uniform float64 numbers in [0, 1) of shape ``(len(index), streams)``.

    ``out[i, j]`` depends only on ``(seed, index[i], j)``.
    """
    key = mix64_int(mix64_int(seed) + 0x632BE59BD9B4E019)
    with np.errstate(over="ignore"):
        base = mix64(np.asarray(index).astype(np.uint64) * _INDEX_MUL + np.uint64(key))
        z = base[:, None] + np.arange(1, streams + 1, dtype=np.uint64)[None, :] * _GAMMA
        z = mix64(z)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normals(u1: np.ndarray, u2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box-Muller: two independent standard normals from two uniforms in [0, 1)."""
    r = np.sqrt(-2.0 * np.log1p(-u1))
    t = 2.0 * np.pi * u2
    return r * np.cos(t), r * np.sin(t)


def hashed_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(n, seed)``, stable forever."""
    keys = uniforms(seed, np.arange(n), 1)[:, 0]
    return np.argsort(keys, kind="stable")
