"""The learned combiner, alone (frozen stacking) and with its members (joint, end-to-end).

`JointEnsemble` is the study's question in code: members and fusion net in one model, trained by
the same engine as a member. The fusion cross-entropy trains the fusion net and, weighted by beta, the
members; each member's own loss (pix2pix: GAN + lambda*L1, its discriminator stepped in the same loop)
trains it with weight 1 - beta (balance.py). It records the gradient norms that reach each member's output
from the fusion loss and from its own loss, and the members' diversity, so "does the ensemble actually
train the members" is measured, not assumed.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.ensemble.balance import BalanceMode, LossBalancer, route_to_members
from seg_p2p.models.member import SegModel
from seg_p2p.settings import Strict

GRADIENT_EVERY = 10  # training steps between gradient-norm measurements: they cost a discriminator backward


class FusionConfig(Strict):
    """The learned combiner: a few 3x3 convolutions over the concatenated member probabilities."""

    hidden: PositiveInt = 32
    layers: Annotated[int, Field(ge=1)] = 3
    use_photo: bool = False
    lr: PositiveFloat = 1e-3


class FusionNet(nn.Module):
    """3x3 convolutions over concatenated member probabilities (+ photo), added to the log of their mean:
    it starts as the mean ensemble and learns corrections, so a few val images suffice to fit it."""

    def __init__(self, num_members: int, num_classes: int, cfg: FusionConfig):
        super().__init__()
        in_channels = num_members * num_classes + (3 if cfg.use_photo else 0)
        layers, width = [], in_channels
        for _ in range(cfg.layers - 1):
            layers += [nn.Conv2d(width, cfg.hidden, 3, padding=1), nn.ReLU(inplace=True)]
            width = cfg.hidden
        last = nn.Conv2d(width, num_classes, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.use_photo = cfg.use_photo

    def forward(self, member_probs: list[torch.Tensor], photo: torch.Tensor | None = None) -> torch.Tensor:
        inputs = list(member_probs) + ([photo] if self.use_photo else [])
        mean = torch.stack(member_probs).mean(0)
        return self.net(torch.cat(inputs, 1)) + torch.log(mean + 1e-6)


def fusion_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), mask, ignore_index=IGNORE_INDEX)


def fusion_group(fusion: FusionNet, cfg: FusionConfig) -> dict:
    """The fusion net's Adam parameter group: its own lr, Adam's default betas."""
    return {"params": list(fusion.parameters()), "lr": cfg.lr, "betas": (0.9, 0.999)}


class StackingModel(SegModel):
    """Frozen stacking: the fusion net alone, fitted on stored member probabilities of the val split."""

    def __init__(self, num_members: int, num_classes: int, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.fusion = FusionNet(num_members, num_classes, cfg)

    def forward(self, batch):
        return self.fusion(list(batch["probs"].unbind(1)), batch.get("photo"))

    def probabilities(self, output):
        return output.float().softmax(1)

    def generator_losses(self, batch, output):
        return {"loss_fusion_ce": fusion_loss(output, batch["mask"])}

    def networks(self):
        return {"fusion": self.fusion}

    def optimizer_groups(self):
        return {"generator": [fusion_group(self.fusion, self.cfg)]}

    def inference_network(self):
        return self.fusion


class JointEnsemble(SegModel):
    """Members and fusion net in one model. `beta` and `balance` set how much the fusion loss trains the members
    (balance.py); the fusion net is always trained by the fusion loss."""

    def __init__(self, members: dict[str, SegModel], num_classes: int, cfg: FusionConfig, discriminator: bool,
                 beta: float, balance: BalanceMode, balance_lr: float):
        super().__init__()
        self.members = nn.ModuleDict(members)
        if not discriminator:  # the same members, their GAN terms and discriminators removed
            for member in self.members.values():
                member.drop_discriminator()
        self.fusion = FusionNet(len(members), num_classes, cfg)
        self.balancer = LossBalancer(balance, list(members))
        self.cfg, self.beta, self.balance_lr = cfg, beta, balance_lr
        self.steps = 0  # training steps so far (checkpointed as extra state: a resumed run measures on the same steps)

    def forward(self, batch):
        outputs = {name: member(batch) for name, member in self.members.items()}
        probs = {name: self.members[name].probabilities(out) for name, out in outputs.items()}
        fused = self.fusion([route_to_members(p, self.beta) for p in probs.values()], batch["photo"])
        return {"members": outputs, "probs": probs, "fused": fused}

    def probabilities(self, output):
        return output["fused"].float().softmax(1)

    def generator_losses(self, batch, output):
        """Minimised: w_f * fusion; per member w_m * ((1 - beta) * own supervised terms + adversarial terms); the
        balancer's own loss. Logged: each member's own loss unweighted (`own.M`) and the weights (`weight.M`: its
        supervised terms' w_m * (1 - beta))."""
        fused = fusion_loss(output["fused"], batch["mask"])
        terms = {name: member.generator_losses(batch, output["members"][name]) for name, member in self.members.items()}
        own = {name: sum(value for key, value in member_terms.items() if key.startswith("loss_"))
               for name, member_terms in terms.items()}
        weights, losses = self.balancer(fused, own)
        losses["loss_fusion_ce"] = weights["fusion"] * fused
        for name, member_terms in terms.items():
            adversarial = self.members[name].adversarial_losses
            for key, value in member_terms.items():
                if not key.startswith("loss_"):
                    losses[f"{key}.{name}"] = value
                elif key in adversarial:  # the discriminator's say: kept at every beta (the study's question)
                    losses[f"{key}.{name}"] = weights[name] * value
                elif self.beta < 1:  # at beta = 1 the member's own supervised loss is only logged (own.M)
                    losses[f"{key}.{name}"] = (1 - self.beta) * weights[name] * value
            losses[f"own.{name}"] = own[name].detach()
            if self.balancer.mode != "none":
                losses[f"weight.{name}"] = ((1 - self.beta) * weights[name]).detach()
        if self.balancer.mode != "none":
            losses["weight.fusion"] = weights["fusion"].detach()
        if torch.is_grad_enabled():
            self.steps += 1
            if self.steps % GRADIENT_EVERY == 1:  # the first step, then every GRADIENT_EVERY
                losses.update(self._gradient_norms(losses, output["members"]))
        return losses

    @staticmethod
    def _gradient_norms(losses: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict:
        """Norms of the gradients that reach each member's output from the fusion loss and from its own terms, as
        weighted in this step (beta and the balancing included; the control's fusion share is exactly 0).

        Measured at the member's output (its raw colours or logits), where both arrive in the same space:
        their ratio says how much the ensemble, rather than the member's own objective, trains it. (At the
        probabilities they would not: through the fusion's log-mean term that gradient is the same for all
        members.) Costs backwards through the fusion net and the loss heads, and through the discriminator
        (+12% of a joint step at 64 px on a CPU), hence only every GRADIENT_EVERY steps.
        """
        names = list(outputs)
        from_fusion = torch.autograd.grad(losses["loss_fusion_ce"], [outputs[name] for name in names],
                                          retain_graph=True, allow_unused=True)
        norms = {}
        for name, grad in zip(names, from_fusion):
            own_terms = [value for key, value in losses.items() if key.startswith("loss_") and key.endswith(f".{name}")]
            from_own = torch.autograd.grad(sum(own_terms), outputs[name], retain_graph=True,
                                           allow_unused=True)[0] if own_terms else None
            norms[f"grad_fusion.{name}"], norms[f"grad_own.{name}"] = (
                g.norm() if g is not None else outputs[name].new_zeros(()) for g in (grad, from_own))
        return norms

    def pixel_tallies(self, batch, output):
        """Per member pair, the pixels (void excluded) where the members' labels differ: their diversity. Joint
        training that colludes raises it on the training images but not on held-out ones (Jeffares et al. 2023)."""
        valid = batch["mask"] != IGNORE_INDEX
        labels = {name: probs.argmax(1) for name, probs in output["probs"].items()}
        names, total = list(labels), valid.sum()
        tallies = {f"disagreement.{a}_vs_{b}": (((labels[a] != labels[b]) & valid).sum(), total)
                   for i, a in enumerate(names) for b in names[i + 1:]}
        if tallies:
            tallies["diversity"] = (sum(hits for hits, _ in tallies.values()), total * len(tallies))
        return tallies

    def get_extra_state(self):
        return {"steps": self.steps}

    def set_extra_state(self, state):
        self.steps = int(state["steps"])

    def discriminator_losses(self, batch, output):
        losses = {}
        for name, member in self.members.items():
            for key, value in member.discriminator_losses(batch, output["members"][name]).items():
                losses[f"{key}.{name}"] = value
        return losses

    def networks(self):
        """Each role's networks over all members (one ModuleList per role), and the fusion net."""
        by_role: dict[str, list[nn.Module]] = {}
        for member in self.members.values():
            for role, net in member.networks().items():
                by_role.setdefault(role, []).append(net)
        return {role: nn.ModuleList(nets) for role, nets in by_role.items()} | {"fusion": self.fusion}

    def optimizer_groups(self):
        """One optimizer per slot over all members, a parameter group each (each keeps its own lr and betas);
        the fusion net joins the generator step."""
        slots: dict[str, list[dict]] = {}
        for member in self.members.values():
            for slot, groups in member.optimizer_groups().items():
                slots.setdefault(slot, []).extend(groups)
        slots["generator"].append(fusion_group(self.fusion, self.cfg))
        if self.balancer.mode == "uncertainty":
            slots["generator"].append({"params": [self.balancer.log_variance], "lr": self.balance_lr,
                                       "betas": (0.9, 0.999)})
        return slots

    def wrap_networks(self, wrap):
        for member in self.members.values():
            member.wrap_networks(wrap)
        self.fusion = wrap(self.fusion)

    def inference_network(self):
        return _JointInference(self)


class _JointInference(nn.Module):
    """Photo -> fused logits, for FLOPs and timing (the discriminator is not run at test time)."""

    def __init__(self, joint: JointEnsemble):
        super().__init__()
        self.joint = joint

    def forward(self, photo):
        return self.joint({"photo": photo})["fused"]


class ProbabilityDataset(torch.utils.data.Dataset):
    """Stored member probabilities of one split with its (eval-transformed) photos and masks, brought to the
    probabilities' stored size (predict.py may keep them smaller than the photo). `crop`: a random crop of that
    many pixels per item, drawn from (seed, epoch, index) like the photo jitter and padded with void where an
    item is smaller, so items of any size batch; None: whole items."""

    def __init__(self, member_probs: list, base, crop: int | None = None, seed: int = 0):
        self.member_probs, self.base, self.crop, self.seed = member_probs, base, crop, seed
        self.epoch = 0

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __getitem__(self, i):
        from seg_p2p.data.dataset import item_seed

        item = self.base[i]
        probs = torch.from_numpy(np.stack([p[i] for p in self.member_probs]).astype(np.float32))
        size = tuple(probs.shape[-2:])
        if tuple(item["mask"].shape) != size:
            item["photo"] = F.interpolate(item["photo"][None], size=size, mode="area")[0]
            item["mask"] = F.interpolate(item["mask"][None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
        item["probs"] = probs
        if self.crop is not None:
            item = self._random_crop(item, np.random.default_rng(item_seed(self.seed, self.epoch, i)))
        return item

    def _random_crop(self, item: dict, rng: np.random.Generator) -> dict:
        crop = self.crop
        height, width = item["mask"].shape
        pad = (0, max(crop - width, 0), 0, max(crop - height, 0))
        y = int(rng.integers(0, max(height - crop, 0) + 1))
        x = int(rng.integers(0, max(width - crop, 0) + 1))
        values = {"photo": 0.0, "probs": 0.0, "mask": IGNORE_INDEX}
        for key, value in values.items():
            item[key] = F.pad(item[key], pad, value=value)[..., y:y + crop, x:x + crop]
        return item
