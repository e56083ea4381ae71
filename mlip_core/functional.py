"""The native committee's physics as pure tensor functions, the one definition of the model.

:class:`~mlip_core.model.CommitteePotential` (and its :mod:`~mlip_core.layers`) hold the
parameters and call these functions in :meth:`~mlip_core.model.CommitteePotential.predict`;
:mod:`mlip_core.standalone` compiles the very same functions with ``torch.jit.script`` for the
TorchScript export. Hence the rules of this module: no Python-only constructs (no ``*args``,
generators, closures over globals, context managers), weights passed in as tensors grouped by
the named tuples below (no ``from __future__ import annotations``: TorchScript reads their
field types at run time). Shapes: K members, N atoms, M neighbor slots (dense layout of
:mod:`mlip_core.neighbors`), C channels, S species, nb basis functions.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "CommitteeWeights",
    "LayerWeights",
    "MLPWeights",
    "atomic_energies",
    "edge_features",
    "edge_forces",
    "edge_gradient",
    "edge_stress",
    "edge_vectors",
    "energies_and_edge_gradients",
    "interaction",
    "spherical_harmonics_l2",
    "ylm_vector_jacobian_product",
    "zbl_edges",
    "zbl_pair",
]


class MLPWeights(NamedTuple):
    """A :class:`~mlip_core.layers.StackedMLP`: ``w1 (K, d_in, h)``, ``b1 (K, 1, h)``,
    ``w2 (K, h, d_out)``, ``b2 (K, 1, d_out)``."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor


class LayerWeights(NamedTuple):
    """An :class:`~mlip_core.layers.InteractionLayer`: the radial filter ``(K, nb, C)``, the
    invariant mixers of l = 0, 1, 2 (``(K, C, C)`` each), the update MLP, the neighbor-sum
    normalisation and the first layer's density standardisation ``(S*nb,)``, ``(S*nb, 9)``."""

    radial: Tensor
    mix_a: list[Tensor]
    mix_b: list[Tensor]
    update: MLPWeights
    inv_avg: float
    density_shift: Tensor
    density_scale: Tensor


class CommitteeWeights(NamedTuple):
    """The learned part: species embedding ``(K, S, C)``, layers, readout MLP, energy scale."""

    embedding: Tensor
    layers: list[LayerWeights]
    readout: MLPWeights
    energy_scale: Tensor


# --- edge geometry -------------------------------------------------------------------------
def edge_vectors(positions: Tensor, neighbors: Tensor, shifts: Tensor) -> Tensor:
    """``r_ij = x_j - x_i + shift``, ``(N, M, 3)``."""
    return positions[neighbors] - positions.unsqueeze(1) + shifts


def spherical_harmonics_l2(u: Tensor) -> Tensor:
    """Real spherical harmonics l = 0, 1, 2 (component normalisation) of unit vectors.

    Returns ``(..., 9)``: [Y00 | Y1 (3) | Y2 (5)], with ``sum_m Y_lm(u)^2 = 2l + 1``; the block
    of degree l is ``[l^2, (l + 1)^2)``.
    """
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    s3, s15, s5 = math.sqrt(3.0), math.sqrt(15.0), math.sqrt(5.0)
    return torch.stack(
        [
            torch.ones_like(x),
            s3 * x,
            s3 * y,
            s3 * z,
            s15 * x * y,
            s15 * y * z,
            0.5 * s5 * (3.0 * z * z - 1.0),
            s15 * x * z,
            0.5 * s15 * (x * x - y * y),
        ],
        dim=-1,
    )


def ylm_vector_jacobian_product(w: Tensor, unit: Tensor, inv_dist: Tensor) -> Tensor:
    """``sum_lm w_lm dY_lm(r/|r|)/dr`` without forming the (..., 9, 3) Jacobian.

    Args:
        w: ``(K, N, M, 9)`` weights (dE/dY for each member).
        unit: ``(N, M, 3)`` unit vectors u = r/|r|.
        inv_dist: ``(N, M, 1)`` 1/|r| (0 on padding slots).

    Returns:
        ``(K, N, M, 3)``: ``(I - u u^T) (dY/du)^T w / |r|``.
    """
    x, y, z = unit[..., 0], unit[..., 1], unit[..., 2]
    s3, s15, s5 = math.sqrt(3.0), math.sqrt(15.0), math.sqrt(5.0)
    w1, w2, w3, w4 = w[..., 1], w[..., 2], w[..., 3], w[..., 4]
    w5, w6, w7, w8 = w[..., 5], w[..., 6], w[..., 7], w[..., 8]
    vx = s3 * w1 + s15 * (w4 * y + w7 * z + w8 * x)
    vy = s3 * w2 + s15 * (w4 * x + w5 * z - w8 * y)
    vz = s3 * w3 + s15 * (w5 * y + w7 * x) + 3.0 * s5 * w6 * z
    v = torch.stack([vx, vy, vz], dim=-1)
    return (v - (v * unit).sum(-1, keepdim=True) * unit) * inv_dist


def edge_features(
    vectors: Tensor, mask: Tensor, bessel_freq: Tensor, cutoff: float, p: int, with_jacobian: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Shared geometry of the edges, computed once for all committee members.

    Args:
        vectors: ``(N, M, 3)`` neighbor vectors r_ij (padding slots arbitrary).
        mask: ``(N, M)`` real-neighbor mask.
        bessel_freq: ``(nb,)`` Bessel frequencies times r_c (``n pi``).
        cutoff: r_c, Å; p: exponent of the polynomial envelope.
        with_jacobian: also return the analytic derivatives w.r.t. ``vectors``.

    Returns:
        ``basis (N, M, nb)`` (Bessel x envelope, 0 on padding), ``ylm (N, M, 9)``, and, with
        the Jacobian, ``d basis / d|r| (N, M, nb)`` (the basis Jacobian is this times the
        unit vector, rank one) and the unit vectors ``(N, M, 3)`` for
        :func:`ylm_vector_jacobian_product`.
    """
    far = torch.zeros_like(vectors)
    far[..., 0] = 2.0 * cutoff
    safe = torch.where(mask.unsqueeze(-1), vectors, far)
    dist = torch.linalg.vector_norm(safe, dim=-1)  # (N, M)
    unit = safe / dist.unsqueeze(-1)
    x = dist / cutoff
    inside = (x < 1.0) & mask
    ca, cb, cc = (p + 1) * (p + 2) / 2.0, p * (p + 2.0), p * (p + 1) / 2.0
    env = torch.where(inside, 1.0 - ca * x**p + cb * x ** (p + 1) - cc * x ** (p + 2), 0.0)
    freq = (bessel_freq / cutoff).to(dist.dtype)  # (nb,)
    arg = dist.unsqueeze(-1) * freq
    sin = torch.sin(arg)
    norm = math.sqrt(2.0 / cutoff)
    inv_d = (1.0 / dist).unsqueeze(-1)
    basis = norm * sin * (env.unsqueeze(-1) * inv_d)
    ylm = spherical_harmonics_l2(unit)
    if not with_jacobian:
        return basis, ylm, None, None
    denv = torch.where(
        inside,
        (-ca * p * x ** (p - 1) + cb * (p + 1) * x**p - cc * (p + 2) * x ** (p + 1)) / cutoff,
        0.0,
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


# --- the network ---------------------------------------------------------------------------
def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """K independent linear layers as one batched matmul: ``(K, ..., d_in) -> (K, ..., d_out)``."""
    y = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]), weight)
    if bias is not None:
        y = y + bias
    shape = list(x.shape[:-1])
    shape.append(y.shape[-1])
    return y.reshape(shape)


def mlp(x: Tensor, w: MLPWeights) -> Tensor:
    """Two stacked linear layers with a SiLU in between."""
    return stacked_linear(torch.nn.functional.silu(stacked_linear(x, w.w1, w.b1)), w.w2, w.b2)


def invariant_update(h: Tensor, moments: Tensor, w: LayerWeights) -> Tensor:
    """Rotational invariants ``sum_m (A W_a)_lm (A W_b)_lm`` of the moments ``(K, N, C, 9)``
    -> residual feature update ``h + MLP([h, A_00, inv_0, inv_1, inv_2])``."""
    k, n, c = h.shape[0], h.shape[1], h.shape[2]
    feats = [h, moments[..., 0]]
    for deg in range(len(w.mix_a)):
        lo, hi = deg * deg, (deg + 1) * (deg + 1)
        a_l = moments[..., lo:hi].transpose(2, 3).reshape(k, -1, c)  # (K, N*(2l+1), C)
        inv = torch.bmm(a_l, w.mix_a[deg]) * torch.bmm(a_l, w.mix_b[deg])
        feats.append(inv.reshape(k, n, hi - lo, c).sum(2))
    return h + mlp(torch.cat(feats, dim=-1), w.update)


def species_density(onehot: Tensor, basis: Tensor, ylm: Tensor) -> tuple[Tensor, Tensor]:
    """Species-resolved edge basis ``x (R, M, S*nb)`` and raw density
    ``G[s, b, lm] = sum_j [z_j = s] basis_jb Y_lm(u_j)`` ``(R, S*nb, 9)`` for the ``R`` leading
    rows of ``basis (..., M, nb)``, ``onehot (..., M, S)`` (broadcast) and ``ylm (..., M, 9)``."""
    m, n_b, n_s = basis.shape[-2], basis.shape[-1], onehot.shape[-1]
    rows = 1
    for d in basis.shape[:-2]:
        rows *= d
    x = (basis.unsqueeze(-2) * onehot.unsqueeze(-1)).reshape(rows, m, n_s * n_b)
    return x, torch.bmm(x.transpose(1, 2), ylm.reshape(rows, m, 9))


def embedded_layer(h: Tensor, dens: Tensor, embedding: Tensor, w: LayerWeights) -> Tensor:
    """First layer from the raw species-resolved density ``(K, N, S*nb, 9)``: neighbor features
    are species embeddings, so ``message_ijc = sum_b basis_ijb W_bc emb[z_j, c]`` and the sum
    over neighbors runs first (on the density), the member weights act per atom, not per edge."""
    k, n, c = h.shape[0], h.shape[1], h.shape[2]
    n_sb = dens.shape[2]
    shift = torch.zeros_like(w.density_scale)
    shift[:, 0] = w.density_shift
    dens = (dens - shift.to(dens.dtype)) * w.density_scale.to(dens.dtype)
    weights = (embedding.unsqueeze(2) * w.radial.unsqueeze(1)).reshape(k, n_sb, c)
    moments = torch.bmm(dens.transpose(2, 3).reshape(k, n * 9, n_sb), weights)
    return invariant_update(h, moments.reshape(k, n, 9, c).transpose(2, 3), w)


def interaction(
    h: Tensor, neighbors: Tensor, basis: Tensor, ylm: Tensor, w: LayerWeights
) -> Tensor:
    """A message-passing layer on features ``h (K, N, C)``: moments
    ``A_i = sum_j R(r_ij) h_j Y(u_ij)`` of ``basis (K, N, M, nb)`` (envelope and padding mask
    included) and ``ylm (K, N, M, 9)``, then :func:`invariant_update`."""
    k, n, c = h.shape[0], h.shape[1], h.shape[2]
    m = neighbors.shape[1]
    messages = stacked_linear(basis, w.radial, None) * h[:, neighbors]  # 0 at and beyond r_c
    moments = torch.bmm(messages.reshape(k * n, m, c).transpose(1, 2), ylm.reshape(k * n, m, 9))
    return invariant_update(h, moments.reshape(k, n, c, 9) * w.inv_avg, w)


def readout(h: Tensor, w: CommitteeWeights) -> Tensor:
    """Atomic energies ``(K, N)``, eV, of the final features."""
    return mlp(h, w.readout).squeeze(-1) * w.energy_scale.to(h.dtype)


def atomic_energies(
    species: Tensor, neighbors: Tensor, basis: Tensor, ylm: Tensor, w: CommitteeWeights
) -> Tensor:
    """Learned atomic energies ``(K, N)``, eV, from per-member ``basis (K, N, M, nb)`` and
    ``ylm (K, N, M, 9)``: the embedded first layer, then per-edge message passing."""
    h = w.embedding[:, species]  # (K, N, C)
    onehot = torch.nn.functional.one_hot(species[neighbors], w.embedding.shape[1])
    onehot = onehot.to(basis.dtype)
    for i, layer in enumerate(w.layers):
        if i == 0:
            dens = species_density(onehot.unsqueeze(0), basis, ylm)[1]  # (K*N, S*nb, 9)
            h = embedded_layer(h, dens.reshape(h.shape[0], h.shape[1], -1, 9), w.embedding, layer)
        else:
            h = interaction(h, neighbors, basis, ylm, layer)
    return readout(h, w)


def energies_and_edge_gradients(
    species: Tensor,
    neighbors: Tensor,
    basis: Tensor,
    ylm: Tensor,
    w: CommitteeWeights,
    need_grad: bool,
    create_graph: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Atomic energies ``(K, N)`` and, with ``need_grad``, ``dE_k/d basis (K, N, M, nb)`` and
    ``dE_k/d Y (K, N, M, 9)`` of the shared edge features ``basis (N, M, nb)``, ``ylm``.

    One layer: the species-resolved density ``(N, S*nb, 9)`` is computed once, its per-member
    copies are the autograd leaves, and two batched matmuls against the shared edge tensors turn
    dE_k/d(density) into the per-edge gradients. More layers: per-member copies of the edge
    features are the leaves. The caller enables gradients (``need_grad``); ``create_graph``
    keeps the graph of the gradients (force training).
    """
    k, n_s, n_b = w.embedding.shape[0], w.embedding.shape[1], basis.shape[-1]
    n, m = neighbors.shape[0], neighbors.shape[1]
    if len(w.layers) > 1:
        basis_k = basis.unsqueeze(0).expand(k, -1, -1, -1)
        ylm_k = ylm.unsqueeze(0).expand(k, -1, -1, -1)
        if need_grad:
            basis_k = basis_k.clone().requires_grad_(True)
            ylm_k = ylm_k.clone().requires_grad_(True)
        e_atoms = atomic_energies(species, neighbors, basis_k, ylm_k, w)
        if not need_grad:
            return e_atoms, None, None
        grads = torch.autograd.grad([e_atoms.sum()], [basis_k, ylm_k], create_graph=create_graph)
        return e_atoms, grads[0], grads[1]
    onehot = torch.nn.functional.one_hot(species[neighbors], n_s).to(basis.dtype)
    x, dens = species_density(onehot, basis, ylm)  # (N, M, S*nb), (N, S*nb, 9): shared
    dens_k = dens.unsqueeze(0).expand(k, -1, -1, -1)
    if need_grad:
        dens_k = dens_k.clone().requires_grad_(True)
    h = embedded_layer(w.embedding[:, species], dens_k, w.embedding, w.layers[0])
    e_atoms = readout(h, w)
    if not need_grad:
        return e_atoms, None, None
    g = torch.autograd.grad([e_atoms.sum()], [dens_k], create_graph=create_graph)[0]
    assert g is not None
    g_x = torch.bmm(ylm, g.permute(1, 3, 0, 2).reshape(n, 9, k * n_s * n_b))
    g_x = g_x.reshape(n, m, k, n_s, n_b)
    g_basis = g_x[:, :, :, 0] if n_s == 1 else (g_x * onehot[:, :, None, :, None]).sum(3)
    g_ylm = torch.bmm(x, g.permute(1, 2, 0, 3).reshape(n, n_s * n_b, k * 9))
    return e_atoms, g_basis.permute(2, 0, 1, 3), g_ylm.reshape(n, m, k, 9).permute(2, 0, 1, 3)


# --- from dE/d(edge features) to forces and stress -----------------------------------------
def edge_gradient(
    vectors: Tensor, mask: Tensor, g_basis: Tensor, dbasis_dd: Tensor, g_ylm: Tensor, unit: Tensor
) -> Tensor:
    """``dE_k/dr_ij (K, N, M, 3)`` through the shared edge Jacobian: the radial part is along
    the unit vector, the angular part is :func:`ylm_vector_jacobian_product`."""
    dist = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(1e-12)
    radial = (g_basis * dbasis_dd).sum(-1, keepdim=True) * (vectors / dist)
    inv = mask.unsqueeze(-1).to(vectors.dtype) / dist
    return radial + ylm_vector_jacobian_product(g_ylm, unit, inv)


def edge_forces(de_dr: Tensor, neighbors: Tensor) -> Tensor:
    """Forces ``(K, N, 3)`` from ``dE_k/dr_ij (K, N, M, 3)``: ``r_ij = x_j - x_i + shift``, so
    ``dE/dx_a = sum_{j->a} dE/dr - sum_m dE/dr_am`` and ``F = -dE/dx``."""
    k = de_dr.shape[0]
    grad_x = (-de_dr.sum(2)).index_add(1, neighbors.reshape(-1), de_dr.reshape(k, -1, 3))
    return -grad_x


def edge_stress(
    vectors: Tensor, de_dr: Tensor, batch: Tensor, n_structures: int, volume: Tensor
) -> Tensor:
    """Virial stress ``(K, B, 3, 3)``, ``(1/V) sum_ij r_ij (x) dE/dr_ij`` symmetrised (the strain
    derivative), per structure (``batch (N,)``, ``volume (B,)`` > 0)."""
    k = de_dr.shape[0]
    virial = torch.einsum("nmi,knmj->knij", vectors, de_dr)
    per_struct = torch.zeros(
        k, n_structures, 3, 3, dtype=de_dr.dtype, device=de_dr.device
    ).index_add(1, batch, virial)
    return 0.5 * (per_struct + per_struct.transpose(-1, -2)) / volume.view(1, n_structures, 1, 1)


# --- the ZBL baseline (mlip_core.repulsion), float64 -----------------------------------------
def zbl_pair(
    dist: Tensor, zi: Tensor, zj: Tensor, r_in: Tensor, r_out: Tensor, constants: list[float]
) -> tuple[Tensor, Tensor]:
    """Switched pair energies ``E S`` (eV) and ``d(E S)/dr`` (eV/Å) of distances ``dist`` (Å,
    float64, > 0) between atomic numbers ``zi``, ``zj`` with switch radii ``r_in``, ``r_out``
    (all the same shape); ``constants``: :data:`mlip_core.repulsion.ZBL_CONSTANTS`."""
    a = constants[0] / (zi**0.23 + zj**0.23)
    x = dist / a
    phi = torch.zeros_like(dist)
    dphi = torch.zeros_like(dist)
    for q in range(4):
        term = constants[2 + q] * torch.exp(-constants[6 + q] * x)
        phi = phi + term
        dphi = dphi - constants[6 + q] * term
    k = zi * zj * constants[1]
    e = k / dist * phi
    de = -e / dist + k / (dist * a) * dphi
    width = r_out - r_in
    t = ((dist - r_in) / width).clamp(0.0, 1.0)
    s = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    ds = -30.0 * t**2 * (1.0 - t) ** 2 / width
    return e * s, de * s + e * ds


def zbl_edges(
    species: Tensor,
    neighbors: Tensor,
    mask: Tensor,
    vectors: Tensor,
    tables: list[Tensor],
    constants: list[float],
) -> tuple[Tensor, Tensor]:
    """Per directed edge of the dense layout: half the switched pair energy ``(N, M)`` and its
    gradient ``dE/dr_ij (N, M, 3)`` (float64 ``vectors``); ``tables``: the ``z (S,)``,
    ``r_in (S, S)``, ``r_out (S, S)`` of :class:`~mlip_core.repulsion.ZBLRepulsion`."""
    z, r_in, r_out = tables[0], tables[1], tables[2]
    si = species.unsqueeze(1).expand_as(neighbors)
    sj = species[neighbors]
    dist = torch.linalg.vector_norm(vectors, dim=-1)
    near = mask & (dist < r_out[si, sj])
    safe = torch.where(near, dist, torch.ones_like(dist))
    e_pair, de_pair = zbl_pair(safe, z[si], z[sj], r_in[si, sj], r_out[si, sj], constants)
    e_edge = torch.where(near, 0.5 * e_pair, 0.0)  # half of each pair per side
    return e_edge, torch.where(near, 0.5 * de_pair / safe, 0.0).unsqueeze(-1) * vectors
