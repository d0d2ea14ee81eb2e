"""WeightedInfoNCE: symmetric InfoNCE over a batch of (drone, tile) pairs, softened by IoU.

Formulation (Game4Loc's weighted InfoNCE, written here from its definition):
for a batch of B pairs, logits ``L = s * d @ t.T`` (s = exp(logit_scale), d and t L2-normalised
drone and tile descriptors). Pair i has a smoothing ``eps_i`` from the IoU weight ``w_i`` of its
tile::

    eps_i = 1 - (1 - label_smoothing) * sigmoid(k * w_i)

so a tile that covers the drone view well (w -> 1) gets a nearly hard target (eps ~ 0.007 at
k = 5) and a poor one (w -> 0) a soft one (eps = 0.5). The target distribution of row i puts
``1 - eps_i`` on the diagonal and spreads ``eps_i`` uniformly over the B columns (label smoothing),
and the loss is the cross-entropy to it, averaged over rows, for drone->tile and tile->drone
(rows of L and of L.T, each with its pair's eps), and the two averaged::

    loss_i = (1 - eps_i) * (lse_i - L_ii) + eps_i * (lse_i - mean_j L_ij)
    lse_i = logsumexp_j L_ij

Pairs of a batch that show the same place (same tile, or the same drone image duplicated by a
multiplier) are not negatives of each other: pass ``same_place`` [B, B] bool and those
off-diagonal logits leave the softmax (and the uniform spread covers the remaining columns).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale)


def smoothing_from_iou(weights, k=5.0, label_smoothing=0.0):
    """IoU weights [B] in [0, 1] -> per-pair smoothing eps [B] (see the module docstring)."""
    weights = torch.as_tensor(weights, dtype=torch.float32)
    return 1.0 - (1.0 - float(label_smoothing)) * torch.sigmoid(float(k) * weights)


def soft_cross_entropy(logits, eps, same_place=None):
    """Mean over rows of the cross-entropy of ``logits`` [B, B] to the smoothed diagonal target.

    Args:
        logits: [B, B] float.
        eps: [B] smoothing per row (0 = one-hot on the diagonal).
        same_place: optional [B, B] bool; True off the diagonal excludes that entry.

    Returns:
        Scalar tensor.
    """
    n = logits.shape[0]
    if logits.shape != (n, n):
        raise ValueError(f'logits must be square [B, B], got {tuple(logits.shape)}')
    eps = torch.as_tensor(eps, dtype=logits.dtype, device=logits.device).reshape(n)
    keep = torch.ones(n, n, dtype=torch.bool, device=logits.device)
    if same_place is not None:
        eye = torch.eye(n, dtype=torch.bool, device=logits.device)
        keep = ~same_place.to(device=logits.device, dtype=torch.bool) | eye
    log_p = F.log_softmax(logits.masked_fill(~keep, float('-inf')), dim=1)
    log_p = log_p.masked_fill(~keep, 0.0)
    kept = keep.sum(dim=1).to(logits.dtype)
    diag = log_p.diagonal()
    uniform = log_p.sum(dim=1) / kept
    return -((1.0 - eps) * diag + eps * uniform).mean()


class WeightedInfoNCE(nn.Module):
    """Symmetric IoU-weighted InfoNCE (see the module docstring).

    Args:
        k: steepness of the IoU -> smoothing map (Game4Loc's default 5).
        label_smoothing: smoothing of a pair with a very large weight (floor of eps).

    ``forward(drone [B, D], tile [B, D], logit_scale (scalar log inverse temperature),
    weights [B] IoU in [0, 1] or None (plain InfoNCE with ``label_smoothing``), same_place
    [B, B] bool or None) -> scalar loss``.
    """

    def __init__(self, k=5.0, label_smoothing=0.0):
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing}')
        self.k = float(k)
        self.label_smoothing = float(label_smoothing)

    def forward(self, drone, tile, logit_scale, weights=None, same_place=None):
        if drone.shape != tile.shape or drone.dim() != 2:
            raise ValueError(f'drone and tile descriptors must both be [B, D], got '
                             f'{tuple(drone.shape)} and {tuple(tile.shape)}')
        drone = F.normalize(drone.float(), dim=-1)
        tile = F.normalize(tile.float(), dim=-1)
        scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=drone.device)
        scale = scale.exp().clamp(max=MAX_LOGIT_SCALE)
        logits = scale * drone @ tile.T
        n = drone.shape[0]
        if weights is None:
            eps = torch.full((n,), self.label_smoothing, device=drone.device)
        else:
            eps = smoothing_from_iou(weights, self.k, self.label_smoothing).to(drone.device)
        same_t = None if same_place is None else same_place.T
        return 0.5 * (soft_cross_entropy(logits, eps, same_place)
                      + soft_cross_entropy(logits.T, eps, same_t))
