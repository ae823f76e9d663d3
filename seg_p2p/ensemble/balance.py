"""How much the ensemble's loss trains the members: the weight beta and the loss balancing.

In joint training every member's parameters receive the gradient of
    w_m * ((1 - beta) * supervised_m + adversarial_m)  +  beta * w_f * fusion,
and the fusion net the gradient of w_f * fusion. supervised_m is the member's L1, lambda * L1 or cross-entropy;
adversarial_m its GAN term, which stays at every beta wherever its discriminator is in the loop (that is the
study's question). beta = 0 is the compute-matched control: each member trained by its own loss only (times w_m,
a scale Adam ignores), the fusion loss sending no gradient into any member; beta = 1 trains the members by the
ensemble's loss alone (and the GAN term). The weights, from each member's own loss (supervised + adversarial),
make beta mean the same for every member:

- `none`: w = 1 (pix2pix's 100 * L1 then outweighs the ensemble's cross-entropy by two orders of magnitude);
- `normalise`: w_m = running mean of the fusion loss / running mean of the member's own loss, w_f = 1, so every
  member's own loss enters at the fusion loss's scale;
- `uncertainty`: w = exp(-s) with learned log-variances s, trained by sum(exp(-s) * loss + s) (Kendall, Gal
  and Cipolla 2018); its optimum is s = log(loss), i.e. each loss weighted by its inverse scale.

The weights are computed from detached loss values, so no network is trained through them; under torchrun the
values are averaged over the processes first, so every rank uses the same weights.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from seg_p2p.distributed import global_mean

BalanceMode = Literal["none", "normalise", "uncertainty"]
BALANCE_MOMENTUM = 0.9  # `normalise`'s running means: ~10 steps of memory, short runs included


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale`."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def route_to_members(probs: torch.Tensor, beta: float) -> torch.Tensor:
    """A member's probabilities as the fusion net reads them: what flows back into the member is beta times the
    fusion loss's gradient. beta = 0 detaches, so the control's members get exactly none."""
    if beta == 0:
        return probs.detach()
    if beta == 1:
        return probs
    return _ScaleGradient.apply(probs, beta)


class LossBalancer(nn.Module):
    """The weights w_f (fusion) and w_m (each member's own loss) of one joint model."""

    def __init__(self, mode: BalanceMode, members: list[str]):
        super().__init__()
        self.mode, self.terms = mode, ["fusion", *members]
        if mode == "normalise":  # running means of each term, nan until the first training step
            self.register_buffer("running", torch.full((len(self.terms),), float("nan")))
        if mode == "uncertainty":
            self.log_variance = nn.Parameter(torch.zeros(len(self.terms)))

    def forward(self, fusion: torch.Tensor, own: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """(weights by term, the balancer's own losses to minimise); running means move in training steps only."""
        values = global_mean(torch.stack([fusion, *(own[m] for m in self.terms[1:])]).detach().float())
        extra = {}
        if self.mode == "none":
            weights = torch.ones_like(values)
        elif self.mode == "normalise":
            running = torch.where(torch.isnan(self.running), values,
                                  BALANCE_MOMENTUM * self.running + (1 - BALANCE_MOMENTUM) * values)
            if torch.is_grad_enabled():
                self.running.copy_(running)
            weights = running[0] / running.clamp(min=1e-12)
        else:
            weights = torch.exp(-self.log_variance).detach()
            extra["loss_uncertainty"] = (torch.exp(-self.log_variance) * values + self.log_variance).sum()
        return dict(zip(self.terms, weights)), extra
