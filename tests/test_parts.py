"""A researcher's own part of the drag (issue 22): written outside dragnb in a few lines, passed to the drag and
the session, cached under its own key, and drawn by the same views as the package's parts."""

import dataclasses

import torch

from dragnb.config import DragSettings, InversionSettings, LoraSettings, Settings
from dragnb.drag import DragParts, drag, make_parts
from dragnb.drag.line_search import LineSearch, TemplateSupervision
from dragnb.drag.optimised import LatentAndText
from dragnb.drag.supervision import Anchored, Held, MotionSupervision
from dragnb.drag.timesteps import Alternating, OneTimestep
from dragnb.drag.trackers import FollowLatest, NearestNeighbour
from dragnb.lora import remove_lora
from dragnb.models import encode_prompt
from dragnb.motion import bilinear_patch
from dragnb.session import DragSession
from dragnb.tracking import TrackingWindow, chosen_points

FAST = Settings(lora=LoraSettings(steps=0), inversion=InversionSettings(num_steps=20),
                drag=DragSettings(max_steps=6, lr=0.05))


class PatchTracker(NearestNeighbour):  # the example of docs/method.md §6 and notebook 09, as a researcher writes it
    """Match the 3x3 patch around h⁰ instead of one pixel: h^k = argmin over q in Ω(h^{k-1}, r2) of
    mean |F(Ω(q, 1)) - F_0(Ω(h⁰, 1))|."""

    quantity = "mean|F_k(Ω(q)) − F_0(Ω(h⁰))|"

    def begin(self, reference):
        super().begin(reference)
        self.patches = [bilinear_patch(reference.features, h.floor(), 1) for h in reference.handles]

    def track(self, step, features, handles, targets):
        if step == 0:
            self.windows = []
            return handles
        (rows, cols), r2, features = features.shape[-2:], self.settings.r2, features.detach()
        self.windows = []
        for h, patch in zip(handles, self.patches):
            top, left = max(0, int(h[0]) - r2), max(0, int(h[1]) - r2)
            bottom, right = min(rows, int(h[0]) + r2 + 1), min(cols, int(h[1]) + r2 + 1)
            distances = torch.tensor([[float((bilinear_patch(features, torch.tensor([float(r), float(c)]), 1) - patch)
                                             .abs().mean()) for c in range(left, right)] for r in range(top, bottom)])
            best = divmod(int(distances.argmin()), right - left)
            self.windows.append(TrackingWindow(distances, (top, left), (top + best[0], left + best[1]), self.quantity))
        return chosen_points(self.windows, handles)


def test_the_settings_name_the_parts():
    def kinds(**changes):
        parts = make_parts(dataclasses.replace(DragSettings(), **changes))
        return type(parts.timesteps), type(parts.optimised).__name__, type(parts.tracker), type(parts.supervision)

    assert kinds() == (OneTimestep, "Latent", NearestNeighbour, MotionSupervision)  # the paper's loop
    assert kinds(schedule="alternating", optimize_text=True, track_from="previous", supervision="anchored") == (
        Alternating, LatentAndText.__name__, FollowLatest, Anchored)
    assert kinds(hold_steps=2)[3] is Held and kinds(tracking="line_search")[2:] == (LineSearch, TemplateSupervision)
    made = make_parts(DragSettings(), DragParts(tracker=PatchTracker))
    assert type(made.tracker) is PatchTracker and type(made.supervision) is MotionSupervision


def test_the_patch_tracker_finds_a_moved_patch():
    """On a hand-made feature map whose one textured 3x3 patch moved by (1, 2), the patch tracker follows it."""
    torch.manual_seed(0)
    before = torch.zeros(1, 4, 12, 12)
    before[..., 4:7, 4:7] = torch.randn(1, 4, 3, 3)
    after = torch.roll(before, shifts=(1, 2), dims=(-2, -1))
    from dragnb.drag import Reference

    tracker = PatchTracker(DragSettings(r2=3))
    tracker.begin(Reference(t=0, latent=torch.zeros(1), features=before, x_prev=torch.zeros(1),
                            handles=torch.tensor([[5.0, 5.0]])))
    moved = tracker.track(1, after, torch.tensor([[5.0, 5.0]]), torch.tensor([[5.0, 10.0]]))
    assert moved.tolist() == [[6.0, 7.0]] and tracker.windows[0].distances.min() == 0


def test_a_researchers_tracker_runs_through_drag_and_session_and_views(tiny_model, blob_image):
    from dragnb.ui import plots

    remove_lora(tiny_model.pipe)
    torch.manual_seed(0)
    tiny_model.pipe.scheduler.set_timesteps(20)
    zt, t = torch.randn(1, 4, 16, 16), int(tiny_model.pipe.scheduler.timesteps[6])
    text = encode_prompt(tiny_model, "a red disc")
    handles, targets = torch.tensor([[8.0, 8.0]]), torch.tensor([[8.0, 20.0]])
    ours = drag(tiny_model, zt, t, text, handles, targets, None, FAST.drag, schedule_steps=20, keep_features=True,
                parts=DragParts(tracker=PatchTracker))
    assert len(ours.history) > 2 and all("windows" in s.extras for s in ours.history[1:])

    session = DragSession(tiny_model, blob_image, "a red disc", FAST)
    session.set_points([(16, 16, 40, 16)])
    plain = session.run(keep_features=True)
    session.parts = DragParts(tracker=PatchTracker)
    patched = session.run(keep_features=True)
    assert patched.drag is not plain.drag and patched.origin["drag"] == "computed"  # its own cache key
    assert session.run().drag is patched.drag  # and cached under it
    fig = plots.tracking_heatmaps(patched, steps=(1, 2))
    assert "F_0(Ω(h⁰))" in fig.axes[0].get_title() and fig.axes[0].images
    window = patched.drag.history[1].extras["windows"][0]
    assert tuple(patched.drag.history[1].handles[0].tolist()) == window.best  # the view draws what it chose
