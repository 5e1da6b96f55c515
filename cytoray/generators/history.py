"""A discriminator's history of generated images (Shrivastava et al. 2017, SimGAN): D sees earlier
fakes beside the current ones, so it does not forget the artefacts G has learnt to avoid, and the
two networks oscillate less. Two policies, each as its paper has it:

    fraction   SimGAN (refined-sim): a share `fraction` of the batch is replaced by random stored
               entries; then every current image is stored (appended until full, then over a
               random entry).
    swap       CycleGAN (Zhu et al. 2017): until full, every fake is stored and passed on; then
               each fake is, with probability 1/2, swapped for a random stored one, which it replaces.

The history is a pair of module buffers, so the shared loop checkpoints it with the discriminator
that owns it and a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

POLICIES = ("fraction", "swap")


class HistoryBuffer(nn.Module):
    def __init__(
        self,
        size: int,
        shape: tuple[int, ...],
        policy: Literal["fraction", "swap"],
        fraction: float = 0.5,
    ) -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.size, self.policy, self.fraction = size, policy, fraction
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, fakes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The batch D is shown in place of `fakes`; the history is updated with them."""
        if self.size == 0:
            return fakes
        return (
            self._fraction(fakes, gen)
            if self.policy == "fraction"
            else self._swap(fakes.detach(), gen)
        )

    def _fraction(self, current: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, n = len(current), int(self.count)
        out = current.clone()
        k = min(int(round(self.fraction * b)), n)
        if k > 0:  # replace k of the batch by stored entries
            src = torch.randint(n, (k,), generator=gen).to(current.device)
            out[:k] = self.images[src]
        for (
            img
        ) in current:  # store the current batch: append until full, then overwrite random entries
            j = (
                int(self.count)
                if int(self.count) < self.size
                else int(torch.randint(self.size, (), generator=gen))
            )
            self.images[j] = img
            self.count.fill_(min(int(self.count) + 1, self.size))
        return out

    def _swap(self, fakes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        out = []
        for img in fakes:
            n = int(self.count)
            if n < self.size:
                self.images[n] = img
                self.count += 1
                out.append(img)
            elif torch.rand((), generator=gen).item() < 0.5:
                j = int(torch.randint(self.size, (), generator=gen))
                out.append(self.images[j].clone())
                self.images[j] = img
            else:
                out.append(img)
        return torch.stack(out)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # refined-sim checkpoints written before the two buffers were one call the history "items"
        if prefix + "items" in state_dict and prefix + "images" not in state_dict:
            state_dict[prefix + "images"] = state_dict.pop(prefix + "items")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
