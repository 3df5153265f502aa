"""Stage 3, the drag: the paper's loop (:mod:`.loop`) and the parts a variant changes (:mod:`.parts`).

``loop.py``: :func:`drag`, the six steps of docs/method.md §3.5, and its records. ``forward.py``: step 1, one UNet
call. The parts, one module per job: ``timesteps.py`` (one t; GoodDrag's alternating), ``optimised.py`` (the latent;
DragText's latent and text), ``trackers.py`` (nearest neighbour; follow the latest look), ``line_search.py``
(FreeDrag's tracker and its template supervision), ``supervision.py`` (the paper's source; GoodDrag's anchored;
held). ``choice.py``: which part each setting names.
"""

from .choice import make_parts
from .forward import guided_features
from .loop import COMPLETE, DragResult, DragStep, drag, predicted_frames
from .parts import DragParts, Optimised, Part, Reference, Supervision, Timesteps, Tracker

__all__ = ["COMPLETE", "DragParts", "DragResult", "DragStep", "Optimised", "Part", "Reference", "Supervision",
           "Timesteps", "Tracker", "drag", "guided_features", "make_parts", "predicted_frames"]
