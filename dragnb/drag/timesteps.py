"""Which timesteps the drag walks (docs/method.md §3.5 and §6).

* :class:`OneTimestep`, the paper's: every iteration optimises ẑ_t at the inverted t.
* :class:`Alternating`, GoodDrag's AlDD (Zhang et al. 2024): B = ``drag.steps_per_timestep`` iterations at t_j, then
  one plain DDIM step of the edited and of the unedited latent to t_{j+1}, B more there, ...; at each t_j the
  reference (F_0, x_{t_j-1}^0) comes from the unedited branch *at t_j*, and the optimiser state starts afresh.

Either way the drag ends with the edited latent and the unedited branch at the same timestep
(``DragResult.t``, ``DragResult.original_latent``), from which the denoising goes on.
"""

from __future__ import annotations

import torch

from .parts import Reference, Timesteps


class OneTimestep(Timesteps):
    """The paper's: the whole drag at t."""

    def start(self, look, latent: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor) -> Reference:
        self.walked = [int(t)]
        return look.reference(latent, t, text, handles)


class Alternating(Timesteps):
    """GoodDrag's alternating drag and denoising: B iterations per timestep, walking down the DDIM schedule."""

    def start(self, look, latent: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor) -> Reference:
        if int(t) not in look.timesteps:
            raise ValueError(f"t={t} is not on the {len(look.timesteps)}-step DDIM schedule the alternating drag walks")
        self.look, self.text, self.walked = look, text, [int(t)]
        self.current = look.reference(latent, t, text, handles)
        return self.current

    def _due(self, step: int) -> bool:
        return step > 0 and step % self.settings.steps_per_timestep == 0

    def finished(self, step: int) -> bool:
        return self._due(step) and self.look.timesteps.index(self.current.t) + 1 >= len(self.look.timesteps)

    def move(self, step: int, latent: torch.Tensor, text: torch.Tensor) -> tuple[Reference, torch.Tensor] | None:
        if not self._due(step):
            return None
        t = self.look.timesteps[self.look.timesteps.index(self.current.t) + 1]
        with torch.no_grad():
            edited = self.look(latent.detach(), self.current.t, text.detach())[1]  # the edited latent, one step down
        # the unedited branch's step is the x_{t-1}^0 its reference already took
        self.current = self.look.reference(self.current.x_prev, t, self.text, self.current.handles)
        self.walked.append(t)
        return self.current, edited
