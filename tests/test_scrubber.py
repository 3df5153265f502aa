"""The iteration scrubber (one edit, and two in lockstep), its GIF and MP4, and the slide summary, on the tiny model.

The scrubber has one position per iteration k = 0, …, K-1 plus the final latent at k = K, so K + 1 positions,
pictures and GIF frames for a drag of K iterations.
"""

from __future__ import annotations

import dataclasses
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from dragnb.config import settings_from_dict
from dragnb.drag import predicted_frames
from dragnb.session import DragSession
from dragnb.ui import plots
from dragnb.ui.scrubber import Scrubber

STEPS, SHORTER = 4, 2  # drag iterations of the two edits


@pytest.fixture(scope="module")
def edits(tiny_model):
    """The same 48x64 edit dragged for 4 and for 2 iterations (LoRA and inversion shared through the session's
    cache), keeping latents and features, with each one's x̂_0 frames."""
    image = np.full((48, 64, 3), 90, np.uint8)
    image[10:30, 12:32] = (220, 40, 40)
    settings = settings_from_dict({"lora": {"steps": 2}, "inversion": {"num_steps": 20, "strength": 0.5},
                                   "drag": {"max_steps": STEPS, "lr": 0.05}}, tiny_model.settings)
    session = DragSession(tiny_model, image, "a red square", settings)
    session.set_points([(20, 20, 44, 24)])
    mask = np.zeros((48, 64), bool)
    mask[4:40, 6:56] = True
    session.set_mask(mask)
    longer = session.run(keep_latents=True, keep_features=True)
    session.settings = dataclasses.replace(settings, drag=dataclasses.replace(settings.drag, max_steps=SHORTER))
    shorter = session.run(keep_latents=True, keep_features=True)
    assert len(longer.drag.history) == STEPS and len(shorter.drag.history) == SHORTER
    return {"longer": (longer, predicted_frames(tiny_model, longer.drag, longer.prompt)),
            "shorter": (shorter, predicted_frames(tiny_model, shorter.drag, shorter.prompt))}


@pytest.fixture(scope="module")
def scrubber(edits):
    edit, frames = edits["longer"]
    return Scrubber(edit, frames)


def _shown_region(scrubber: Scrubber, ax) -> np.ndarray:
    """The part of the displayed PNG inside ``ax``'s image, a few pixels in from its frame."""
    picture = np.asarray(Image.open(io.BytesIO(scrubber.image.value)).convert("RGB"))
    height, width = picture.shape[:2]
    box = ax.get_position()  # figure fraction, origin bottom-left
    top, bottom = round((1 - box.y1) * height) + 3, round((1 - box.y0) * height) - 3
    left, right = round(box.x0 * width) + 3, round(box.x1 * width) - 3
    return picture[top:bottom, left:right]


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.NEAREST))


def test_one_position_per_iteration_plus_the_final_latent(scrubber, edits):
    edit, frames = edits["longer"]
    assert [k for k, _ in frames] == list(range(STEPS + 1))
    assert (scrubber.slider.min, scrubber.slider.max) == (0, STEPS)
    assert len(scrubber.pictures) == STEPS + 1 and all(p[:4] == b"\x89PNG" for p in scrubber.pictures)
    assert len(set(scrubber.pictures)) == STEPS + 1  # every position looks different
    assert "dragnb-scrubber" in scrubber._dom_classes
    assert "dragnb-scrubber-slider" in scrubber.slider._dom_classes
    assert len(scrubber.figure.axes) == 4  # x̂_0, the tracking heatmap, its colour bar, the loss curves
    assert scrubber.figure.axes[2].get_ylabel() == "distance (low = match)"


def test_moving_the_slider_shows_that_iteration(scrubber, edits, record_property):
    """Each position k shows x̂_0 of ẑ_t^k, h^k and the path so far, the tracker's window at k and a loss cursor at
    k; the displayed picture's x̂_0 region is closest to frame k. Records how long a slider move takes."""
    edit, frames = edits["longer"]
    view, history = scrubber.views[0], edit.drag.history
    (h, w), (fh, fw) = edit.image_size, frames[0][1].shape[:2]
    path = edit.trajectory_xy() * [fw / w, fh / h]  # (K + 1, N, 2) in frame pixels
    for k in [1, 2, 3, 4, 0, 4, 2]:
        scrubber.slider.value = k
        np.testing.assert_array_equal(view.image.get_array(), frames[k][1])
        assert scrubber.image.value == scrubber.pictures[k]
        np.testing.assert_allclose(view.handles.get_offsets(), path[k])
        np.testing.assert_allclose(np.stack(view.paths[0].get_data(), 1), path[:k + 1, 0])
        assert list(view.cursor.get_xdata()) == [k, k]
        t = history[k].t if k < STEPS else edit.drag.t
        assert f"t={t}" in view.image_ax.get_title()
        if 1 <= k < STEPS:
            window = history[k].extras["windows"][0]
            np.testing.assert_array_equal(view.heat.get_array(), window.distances.numpy())
            assert view.heat.get_visible() and view.chosen.get_offsets()[0].tolist() == [window.best[1], window.best[0]]
        else:
            assert not view.heat.get_visible()  # no search at k = 0 nor for the final latent
        shown = _shown_region(scrubber, view.image_ax).astype(float)
        errors = [np.abs(_resized(f, shown.shape[:2]) - shown).mean() for _, f in frames]
        assert int(np.argmin(errors)) == k, errors
    seconds = np.array(scrubber.redraw_seconds[-7:])
    record_property("redraw_ms_mean", round(1000 * seconds.mean(), 2))
    record_property("redraw_ms_max", round(1000 * seconds.max(), 2))
    print(f"\nscrubber: slider move -> redraw {1000 * seconds.mean():.2f} ms mean, {1000 * seconds.max():.2f} ms max "
          f"over {len(seconds)} moves")


def test_two_edits_in_lockstep_hold_the_shorter_at_its_end(edits):
    both = Scrubber({name: edit for name, (edit, _) in edits.items()},
                    {name: frames for name, (_, frames) in edits.items()})
    longer, shorter = both.views
    assert both.slider.max == STEPS and len(both.pictures) == STEPS + 1
    assert longer.image_ax.get_position().x1 <= shorter.image_ax.get_position().x0  # side by side
    both.slider.value = 1
    np.testing.assert_array_equal(shorter.image.get_array(), edits["shorter"][1][1][1])
    assert "held" not in shorter.image_ax.get_title()
    both.slider.value = STEPS
    np.testing.assert_array_equal(longer.image.get_array(), edits["longer"][1][STEPS][1])
    np.testing.assert_array_equal(shorter.image.get_array(), edits["shorter"][1][SHORTER][1])  # clamped to its end
    assert list(shorter.cursor.get_xdata()) == [SHORTER, SHORTER]
    assert f"held here: its drag ended at k={SHORTER}" in shorter.image_ax.get_title()
    assert "held" not in longer.image_ax.get_title()


def test_gif_has_one_frame_per_position(scrubber, tmp_path):
    path = scrubber.save_gif(tmp_path / "drag.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == STEPS + 1
        assert gif.size == tuple((scrubber.figure.get_size_inches() * scrubber.dpi).round().astype(int))


def test_mp4_or_the_error_that_names_ffmpeg(scrubber, tmp_path):
    """The MP4 goes through matplotlib's FFMpegWriter, which needs the ffmpeg program; dragnb does not depend on it.
    Without it save_mp4 must say what to install (checked here), and writing an MP4 cannot be tested: skipped."""
    if shutil.which("ffmpeg") is None:
        with pytest.raises(RuntimeError, match="apt-get install ffmpeg"):
            scrubber.save_mp4(tmp_path / "drag.mp4")
        pytest.skip("ffmpeg is not installed here: save_mp4's error was checked, writing the MP4 was not")
    path = scrubber.save_mp4(tmp_path / "drag.mp4")
    assert path.stat().st_size > 0 and path.read_bytes()[4:8] == b"ftyp"


def test_summary_has_source_three_predictions_result_and_answer(edits):
    edit, frames = edits["longer"]
    answer = np.zeros_like(edit.source)
    fig = plots.summary(edit, frames, answer)
    assert len(fig.axes) == 6
    source, first, middle, last, result, known = fig.axes
    assert (source.images[0].get_array() == edit.source).all() and source.collections  # the mask's outline
    for ax, k in ((first, 0), (middle, len(frames) // 2), (last, STEPS)):
        np.testing.assert_array_equal(ax.images[0].get_array(), frames[k][1])
        assert f"k={k}" in ax.get_title()
    assert (result.images[0].get_array() == edit.image).all()
    np.testing.assert_allclose(np.stack(result.lines[0].get_data(), 1), edit.trajectory_xy()[:, 0])
    assert (known.images[0].get_array() == answer).all() and "known answer" in known.get_title()
    assert len(plots.summary(edit, frames).axes) == 5
