"""TorchScript-compilable pieces of the standalone committee (:mod:`mlip_core.standalone`).

Each function is the scriptable form of a step of :meth:`mlip_core.model.CommitteePotential.
predict` (same operations in the same order, so float32 results agree to rounding): the
padded neighbor layout built from an edge list, the enveloped Bessel basis and its radial
derivative, the stacked MLPs, the invariant update of a message-passing layer and the switched
ZBL pair energy. Shapes: K members, N atoms, M neighbor slots, C channels, S species, nb basis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mlip_core.layers import spherical_harmonics_l2

__all__ = [
    "dense_layout",
    "edge_features",
    "invariant_update",
    "stacked_mlp",
    "zbl_terms",
]


def dense_layout(
    i: Tensor, j: Tensor, shifts: Tensor, n_atoms: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pack an edge list into the dense ``(N, M)`` layout of :mod:`mlip_core.neighbors`.

    Args:
        i, j: ``(E,)`` int64 edge ends (any order).
        shifts: ``(E, 3)`` Cartesian shift of each edge, Å.
        n_atoms: N.

    Returns:
        ``neighbors (N, M)`` (padding slots point at the atom itself), ``shifts (N, M, 3)``
        (0 on padding), ``mask (N, M)`` (True for real edges); ``M = max(1, most edges of an
        atom)``.
    """
    n_edges = i.shape[0]
    order = torch.sort(i, stable=True)[1]
    i_s, j_s, sh = i[order], j[order], shifts[order]
    counts = torch.bincount(i_s, minlength=n_atoms)
    width = max(int(counts.max()), 1)
    slot = torch.arange(n_edges, device=i.device) - (torch.cumsum(counts, 0) - counts)[i_s]
    neighbors = torch.arange(n_atoms, device=i.device).unsqueeze(1).repeat(1, width)
    neighbors = neighbors.index_put((i_s, slot), j_s)
    dense = torch.zeros(n_atoms, width, 3, dtype=shifts.dtype, device=shifts.device)
    dense = dense.index_put((i_s, slot), sh)
    mask = torch.zeros(n_atoms, width, dtype=torch.bool, device=i.device)
    mask = mask.index_put((i_s, slot), torch.ones_like(i_s, dtype=torch.bool))
    return neighbors, dense, mask


def edge_features(
    vectors: Tensor, mask: Tensor, bessel_freq: Tensor, cutoff: float, p: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``basis (N, M, nb)``, ``ylm (N, M, 9)``, ``d basis / d|r| (N, M, nb)`` and the unit
    vectors ``(N, M, 3)`` of neighbor vectors ``(N, M, 3)``
    (:meth:`~mlip_core.model.CommitteePotential.edge_features`)."""
    far = torch.zeros_like(vectors)
    far[..., 0] = 2.0 * cutoff
    safe = torch.where(mask.unsqueeze(-1), vectors, far)
    dist = torch.linalg.vector_norm(safe, dim=-1)
    unit = safe / dist.unsqueeze(-1)
    x = dist / cutoff
    inside = (x < 1.0) & mask
    ca, cb, cc = (p + 1) * (p + 2) / 2.0, p * (p + 2.0), p * (p + 1) / 2.0
    zero = torch.zeros_like(x)
    env = torch.where(inside, 1.0 - ca * x**p + cb * x ** (p + 1) - cc * x ** (p + 2), zero)
    freq = (bessel_freq / cutoff).to(dist.dtype)
    arg = dist.unsqueeze(-1) * freq
    sin = torch.sin(arg)
    norm = math.sqrt(2.0 / cutoff)
    inv_d = (1.0 / dist).unsqueeze(-1)
    basis = norm * sin * (env.unsqueeze(-1) * inv_d)
    ylm = spherical_harmonics_l2(unit)
    denv = torch.where(
        inside,
        (-ca * p * x ** (p - 1) + cb * (p + 1) * x**p - cc * (p + 2) * x ** (p + 1)) / cutoff,
        zero,
    )
    dbasis_dd = (
        norm
        * inv_d
        * (
            freq * torch.cos(arg) * env.unsqueeze(-1)
            + sin * denv.unsqueeze(-1)
            - sin * env.unsqueeze(-1) * inv_d
        )
    )
    return basis, ylm, dbasis_dd, unit


def stacked_mlp(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """:class:`~mlip_core.layers.StackedMLP`: ``(K, ..., d_in) -> (K, ..., d_out)``."""
    k, d = x.shape[0], x.shape[-1]
    hidden, out = list(x.shape[:-1]), list(x.shape[:-1])
    hidden.append(int(w1.shape[-1]))
    out.append(int(w2.shape[-1]))
    y = torch.nn.functional.silu((torch.bmm(x.reshape(k, -1, d), w1) + b1).reshape(hidden))
    return (torch.bmm(y.reshape(k, -1, y.shape[-1]), w2) + b2).reshape(out)


def invariant_update(
    h: Tensor,
    moments: Tensor,
    mix_a: Tensor,
    mix_b: Tensor,
    mlp: list[Tensor],
    lo: list[int],
    hi: list[int],
) -> Tensor:
    """Rotational invariants of ``moments (K, N, C, 9)`` -> ``h + MLP([h, A_0, inv_l])``
    (:meth:`~mlip_core.layers.InteractionLayer._update`); ``mix_a``/``mix_b`` ``(3, K, C, C)``,
    ``mlp`` the update MLP's ``[w1, b1, w2, b2]``, ``lo``/``hi`` the Y_lm blocks of l = 0, 1, 2."""
    k, n, c = h.shape[0], h.shape[1], h.shape[2]
    feats = [h, moments[..., 0]]
    for s in range(len(lo)):
        a_l = moments[..., lo[s] : hi[s]].transpose(2, 3).reshape(k, -1, c)
        inv = torch.bmm(a_l, mix_a[s]) * torch.bmm(a_l, mix_b[s])
        feats.append(inv.reshape(k, n, hi[s] - lo[s], c).sum(2))
    return h + stacked_mlp(torch.cat(feats, dim=-1), mlp[0], mlp[1], mlp[2], mlp[3])


def zbl_terms(
    species: Tensor,
    neighbors: Tensor,
    mask: Tensor,
    pos: Tensor,
    shifts: Tensor,
    vol: Tensor,
    tables: list[Tensor],
    constants: list[float],
) -> tuple[Tensor, Tensor, Tensor]:
    """Switched ZBL energy () eV, forces (N, 3) eV/Å and stress (3, 3) eV/Å^3 (0 without a
    volume), float64, on the dense layout (:meth:`~mlip_core.repulsion.ZBLRepulsion.predict`:
    half of each pair per directed edge, analytic derivatives).

    Args:
        species, neighbors, mask, pos, shifts: the atoms and their dense neighbor layout.
        vol: cell volume, Å^3.
        tables: ``[z (S,), r_in (S, S), r_out (S, S)]`` of the species, float64.
        constants: ``[screening Å, e^2/(4 pi eps0) eV Å, 4 phi coefficients, 4 exponents]``.
    """
    f64 = torch.float64
    p64 = pos.to(f64)
    vectors = p64[neighbors] - p64.unsqueeze(1) + shifts.to(f64)
    si = species.unsqueeze(1).expand_as(neighbors)
    sj = species[neighbors]
    z, r_in, r_out = tables[0], tables[1][si, sj], tables[2][si, sj]
    dist = torch.linalg.vector_norm(vectors, dim=-1)
    near = mask & (dist < r_out)
    d = torch.where(near, dist, torch.ones_like(dist))
    # ZBLRepulsion.pair_energy: E = Z_i Z_j k / r phi(r / a), switched by S(t)
    zi, zj = z[si], z[sj]
    a = constants[0] / (zi**0.23 + zj**0.23)
    x = d / a
    phi = torch.zeros_like(d)
    dphi = torch.zeros_like(d)
    for q in range(4):
        term = constants[2 + q] * torch.exp(-constants[6 + q] * x)
        phi = phi + term
        dphi = dphi - constants[6 + q] * term
    kz = zi * zj * constants[1]
    e = kz / d * phi
    de = -e / d + kz / (d * a) * dphi
    width = r_out - r_in
    t = ((d - r_in) / width).clamp(0.0, 1.0)
    sw = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    dsw = -30.0 * t**2 * (1.0 - t) ** 2 / width
    e_pair, de_pair = e * sw, de * sw + e * dsw
    zero = torch.zeros_like(d)
    energy = torch.where(near, 0.5 * e_pair, zero).sum(1).sum()
    de_dr = torch.where(near, 0.5 * de_pair / d, zero).unsqueeze(-1) * vectors
    grad_x = (-de_dr.sum(1)).index_add(0, neighbors.reshape(-1), de_dr.reshape(-1, 3))
    virial = torch.einsum("nmi,nmj->ij", vectors, de_dr)
    v = vol.to(f64)
    stress = 0.5 * (virial + virial.transpose(0, 1)) / torch.where(v > 0, v, torch.ones_like(v))
    return energy, -grad_x, stress
