"""The learned combiner, alone (frozen stacking) and with its members (joint, end-to-end).

`JointEnsemble` is the study's question in code: members and fusion net in one model, trained by
the same engine as a member. Its loss is the fusion cross-entropy plus every member's own loss
(pix2pix keeps GAN + lambda*L1, its discriminator stepped in the same loop), and the fusion loss
back-propagates into every member. It records the gradient norms that reach each member's output from
the fusion loss and from its own loss, so "does the ensemble actually train the members" is measured,
not assumed.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from seg_p2p.config import Strict
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.models.member import SegModel

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
    def __init__(self, members: dict[str, SegModel], num_classes: int, cfg: FusionConfig, discriminator: bool):
        super().__init__()
        self.members = nn.ModuleDict(members)
        if not discriminator:  # the same members, their GAN terms and discriminators removed
            for member in self.members.values():
                member.drop_discriminator()
        self.fusion = FusionNet(len(members), num_classes, cfg)
        self.cfg = cfg
        self.steps = 0

    def forward(self, batch):
        outputs = {name: member(batch) for name, member in self.members.items()}
        probs = {name: self.members[name].probabilities(out) for name, out in outputs.items()}
        return {"members": outputs, "probs": probs, "fused": self.fusion(list(probs.values()), batch["photo"])}

    def probabilities(self, output):
        return output["fused"].float().softmax(1)

    def generator_losses(self, batch, output):
        fused = fusion_loss(output["fused"], batch["mask"])
        losses, own = {"loss_fusion_ce": fused}, {}
        for name, member in self.members.items():
            own[name] = member.generator_losses(batch, output["members"][name])
            losses.update({f"{key}.{name}": value for key, value in own[name].items()})
        if torch.is_grad_enabled():
            self.steps += 1
            if self.steps % GRADIENT_EVERY == 1:  # the first step, then every GRADIENT_EVERY
                losses.update(self._gradient_norms(fused, own, output["members"]))
        return losses

    @staticmethod
    def _gradient_norms(fused: torch.Tensor, own: dict[str, dict], outputs: dict[str, torch.Tensor]) -> dict:
        """Norms of the gradients that the fusion loss and each member's own loss send to its output.

        Measured at the member's output (its raw colours or logits), where both arrive in the same space:
        their ratio says how much the ensemble, rather than the member's own objective, trains it. (At the
        probabilities they would not: through the fusion's log-mean term that gradient is the same for all
        members.) Costs backwards through the fusion net and the loss heads, and through the discriminator
        (+12% of a joint step at 64 px on a CPU), hence only every GRADIENT_EVERY steps.
        """
        names = list(outputs)
        from_fusion = torch.autograd.grad(fused, [outputs[name] for name in names], retain_graph=True)
        norms = {}
        for name, grad in zip(names, from_fusion):
            own_total = sum(value for key, value in own[name].items() if key.startswith("loss_"))
            (from_own,) = torch.autograd.grad(own_total, outputs[name], retain_graph=True)
            norms[f"grad_fusion.{name}"], norms[f"grad_own.{name}"] = grad.norm(), from_own.norm()
        return norms

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
    """Stored member probabilities of one split with its (eval-transformed) photos and masks."""

    def __init__(self, member_probs: list[np.ndarray], base):
        self.member_probs, self.base = member_probs, base

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, i):
        item = self.base[i]
        item["probs"] = torch.from_numpy(np.stack([p[i] for p in self.member_probs]).astype(np.float32))
        return item
