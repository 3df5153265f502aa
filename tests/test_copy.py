"""drag.start = "copy" (docs/method.md §3.6): the object's footprint in the image, its copy by whole latent cells
with the place it left filled, and the loop that starts from it; off, the paper's loop bit for bit. drag.image_copy:
the object moved in the image by whole pixels and that image inverted, the place it left filled from around it or
painted anew by the model (drag.image_fill "repaint"). And denoise.edit_region = "moved"
(§6): only the dragged objects' places may change."""

import dataclasses

import numpy as np
import pytest
import torch

from test_variants import FAST, _inputs  # the small drag the variants' tests run

from dragnb.drag import drag
from dragnb.drag.copy import MovedStart, cell_moves, copy_in_image, copy_start, vacated
from dragnb.drag.repaint import repaint
from dragnb.footprint import (colour_footprint, dilated, figure_footprint, fill_enclosed, lies_inside, moved_region,
                              shifted)
from dragnb.lora import apply_lora, remove_lora, without_lora
from dragnb.session import DragSession


def test_the_footprint_is_the_object_under_the_handle_with_its_holes():
    img = np.full((32, 32, 3), 255, np.uint8)
    img[4:14, 4:14] = (200, 20, 20)  # a red square ...
    img[8:10, 8:10] = (20, 20, 200)  # ... with a blue dot inside
    img[20:28, 20:28] = (200, 20, 20)  # another red square, apart
    found = colour_footprint(img, (5.0, 5.0), None, 60.0)  # (x, y)
    assert found[4:14, 4:14].all() and found.sum() == 100  # the square, its dot filled in, not the other square
    editable = np.zeros((32, 32), bool)
    editable[:, :8] = True
    assert colour_footprint(img, (5.0, 5.0), editable, 60.0).sum() == 10 * 4  # only inside the mask
    assert colour_footprint(img, (21.0, 21.0), None, 0.0).sum() == 64  # one flat colour: tolerance 0 will do
    grey = np.full((32, 32, 3), 100, np.uint8)
    grey[12:20, 12:20] = (150, 100, 100)  # a dull red square 50 from the grey around it
    box = np.zeros((32, 32), bool)
    box[6:26, 6:26] = True
    assert colour_footprint(grey, (15.0, 15.0), box, 150.0).sum() == 64  # the grey leaks to the box's edge: halved
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[3:6, 3:6] = True, False
    assert fill_enclosed(ring)[2:7, 2:7].all() and fill_enclosed(ring).sum() == 25


def test_the_figure_footprint_takes_in_the_stripes_and_outline_the_colour_region_misses():
    img = np.full((32, 32, 3), (40, 40, 160), np.uint8)  # a blue ground
    img[4:16, 4:16] = (20, 20, 20)  # a black outline ...
    img[5:15, 5:15] = (220, 40, 40)  # ... around a red square ...
    img[5:15, 7:9] = img[5:15, 11:13] = (250, 250, 250)  # ... with white stripes
    img[4:16, 16:22] = (230, 230, 40)  # a yellow square touching it on the right
    box = np.zeros((32, 32), bool)
    box[2:30, 2:30] = True
    colour = colour_footprint(img, (6.0, 6.0), box, 60.0)
    assert colour[5:15, 5:7].all() and not colour[5:15, 7:9].any()  # one red stripe, not the white one
    figure = figure_footprint(img, (6.0, 6.0), box, 60.0)
    assert figure[4:16, 4:16].all()  # the whole square, its stripes and outline
    assert figure[4:16, 16:22].all()  # and what touches it unlike the ground: a figure, not an object
    assert not figure[20:30, :].any() and not figure[:, 23:].any()  # not the ground
    assert (figure == colour_footprint(img, (6.0, 6.0), box, 60.0) | figure).all()  # the colour region is in it


def test_an_object_lies_inside_the_mask_when_its_whole_footprint_does():
    img = np.full((32, 32, 3), (40, 40, 160), np.uint8)  # a blue ground
    img[8:16, 8:16] = (220, 40, 40)  # a red square
    img[22:28, 4:10] = (220, 40, 40)  # another, apart
    box = np.zeros((32, 32), bool)
    box[4:20, 4:20] = True  # holds the first square whole
    assert lies_inside(img, (25.0, 10.0), None, 60.0)  # no mask: everything may change
    assert lies_inside(img, (10.0, 10.0), box, 60.0)  # the square lies inside; the one apart is no matter
    assert lies_inside(img, (10.0, 10.0), box, 60.0, colour_footprint)
    half = box.copy()
    half[:, 12:] = False  # the mask cuts the square: a side to pull, not an object to move
    assert not lies_inside(img, (10.0, 10.0), half, 60.0) and not lies_inside(img, (10.0, 10.0), half, 60.0,
                                                                               colour_footprint)
    img[8:16, 16:30] = (230, 230, 40)  # a yellow bar touching the square, reaching out of the box
    assert not lies_inside(img, (10.0, 10.0), box, 60.0)  # as a figure the two are one, which the box cuts
    assert lies_inside(img, (10.0, 10.0), box, 60.0, colour_footprint)  # the colour region is the square alone


def test_a_shorter_drag_moves_in_the_image_when_the_mask_holds_its_object_whole(tiny_model, blob_image):
    keep = dataclasses.replace(FAST.drag, start="copy", copy_beyond=0.0, image_copy="keep", image_beyond=0.2)
    session = DragSession(tiny_model, blob_image, "a red disc", dataclasses.replace(FAST, drag=keep))
    session.set_points([(24, 24, 33, 24), (50, 50, 53, 50)])  # the disc 9 px right (0.14 of the side); 3 px on gray
    box = np.zeros((64, 64), np.uint8)
    box[8:42, 8:52] = 255  # holds the disc whole
    session.set_mask(box)
    assert session._in_image().tolist() == [False, False]  # image_whole_beyond 0.2 = image_beyond: nothing more
    whole = dataclasses.replace(keep, image_whole_beyond=0.1)
    session.settings = dataclasses.replace(FAST, drag=whole)
    assert session._in_image().tolist() == [True, False]  # the disc is moved in the image, the short drag is not
    assert session._footprints((16, 16))[0].sum() == 0  # and not copied by latent cells as well
    cut = box.copy()
    cut[:, :24] = 0  # the mask holds the disc's right half: a side pulled, which the loop deforms
    session.set_mask(cut)
    assert session._in_image().tolist() == [False, False] and session._footprints((16, 16))[0].any()
    session.settings = dataclasses.replace(FAST, drag=dataclasses.replace(whole, image_copy="off"))
    session.set_mask(box)
    assert session._in_image().tolist() == [False, False]  # no image copy at all


def test_the_copy_in_the_image_moves_the_object_by_whole_pixels_and_fills_where_it_was():
    img = np.full((24, 24, 3), 100, np.uint8)
    img[:, 12:] = 160  # a two-tone ground
    img[4:8, 2:6] = (250, 0, 0)  # the object
    img[14:20, 14:20] = (0, 0, 250)  # a shape the moved one ends on
    before = img.copy()
    footprint = np.zeros((1, 24, 24), bool)
    footprint[0, 4:8, 2:6] = True
    out = copy_in_image(img, footprint, np.array([[13, 11]]), None)  # (dx, dy)
    assert np.array_equal(img, before)  # the input is left alone
    assert (out[15:19, 15:19] == (250, 0, 0)).all()  # the object 13 right, 11 down, over the blue shape
    assert (out[3:9, 1:7] == 100).all()  # where it was (and its rim): the ground around it
    assert (out[14, 14:20] == (0, 0, 250)).all() and (out[0:2] == before[0:2]).all()  # the rest untouched
    editable = np.ones((24, 24), bool)
    editable[14:20, 14:20] = False  # the mask leaves the blue shape out: the object goes behind it
    behind = copy_in_image(img, footprint, np.array([[13, 11]]), editable)
    assert (behind[14:20, 14:20] == (0, 0, 250)).all() and not (behind == (250, 0, 0)).all(-1).any()  # hidden
    assert np.array_equal(copy_in_image(img, np.zeros((1, 24, 24), bool), np.array([[13, 11]]), None), img)


def test_copy_moves_the_footprint_by_whole_cells_and_fills_where_it_was():
    z = torch.zeros(1, 4, 12, 12)
    z[:, :, 2:4, 2:4] = 5.0  # the object
    z[:, :, :, 8:] = -1.0  # something else the copy must not touch
    before = z.clone()
    footprint = np.zeros((1, 12, 12), bool)
    footprint[0, 2:4, 2:4] = True
    out = copy_start(z, footprint, np.array([[4, 3]]))
    assert torch.equal(z, before)  # the input is left alone
    assert torch.equal(out[:, :, 6:8, 5:7], before[:, :, 2:4, 2:4])  # the object, 4 rows down and 3 columns right
    assert (out[:, :, 2:4, 2:4].abs() < 1.0).all()  # where it was: filled from around it, not the object
    assert torch.equal(out[:, :, :, 8:], before[:, :, :, 8:])
    assert torch.equal(copy_start(z, np.zeros((1, 12, 12), bool), np.array([[4, 3]])), z)  # nothing to copy
    # feature pixels -> whole latent cells, nearest (a latent cell is 2 feature pixels here)
    moves = cell_moves(torch.tensor([[4.0, 4.0], [0.0, 0.0]]), torch.tensor([[10.0, 1.0], [2.9, -3.1]]), (0.5, 0.5))
    assert moves.tolist() == [[3, -2], [1, -2]]


def test_copy_with_nothing_to_copy_is_the_papers_loop_and_needs_its_footprints(tiny_model):
    zt, t, text = _inputs(tiny_model)
    h, g = torch.tensor([[8.0, 8.0]]), torch.tensor([[8.0, 20.0]])
    plain = drag(tiny_model, zt, t, text, h, g, None, FAST.drag, schedule_steps=20)
    copy = dataclasses.replace(FAST.drag, start="copy")
    empty = drag(tiny_model, zt, t, text, h, g, None, copy, schedule_steps=20, footprints=np.zeros((1, 16, 16), bool))
    assert torch.equal(plain.latent, empty.latent)
    assert [s.loss for s in plain.history] == [s.loss for s in empty.history]
    with pytest.raises(ValueError, match="footprint"):
        drag(tiny_model, zt, t, text, h, g, None, copy, schedule_steps=20)
    footprint = np.zeros((1, 16, 16), bool)
    footprint[0, 3:6, 3:6] = True
    moved = drag(tiny_model, zt, t, text, h, g, None, copy, schedule_steps=20, footprints=footprint)
    assert moved.initial_handles.tolist() == [[8.0, 8.0]]  # the user's handle, for the views
    assert moved.handles.tolist() == [[8.0, 20.0]]  # the loop starts where the content now is (6 cells right) ...
    assert moved.stop_reason == "reached" and not moved.history  # ... which is the target: nothing left to drag
    assert torch.equal(moved.latent[:, :, 3:6, 9:12], zt[:, :, 3:6, 3:6])  # and returns the copied latent


def test_the_session_copies_the_long_drags_only(tiny_model, blob_image):
    settings = dataclasses.replace(FAST, drag=dataclasses.replace(FAST.drag, start="copy"))
    session = DragSession(tiny_model, blob_image, "a red disc", settings)
    session.set_points([(24, 24, 50, 24), (50, 50, 53, 50)])  # the red disc 26 px right; a short drag on the gray
    found = session._footprints((16, 16))
    assert 15 <= found[0].sum() <= 30 and found[0][6, 6] and not found[0][12, 12]  # the disc (radius 10 px, 4 px cells)
    assert not found[1].any()  # 3 px: the loop alone
    edit = session.run()
    assert edit.drag.initial_handles[0].tolist() == [12.0, 12.0] and edit.image.shape == blob_image.shape


def test_the_moved_region_is_each_object_where_it_was_and_where_it_goes_with_a_margin():
    square = np.zeros((20, 20), bool)
    square[2:5, 2:5] = True
    assert shifted(square, 3, -1)[1:4, 5:8].all() and shifted(square, 3, -1).sum() == 9
    assert shifted(square, -4, 0).sum() == 3  # what leaves the image is dropped: one column of three
    assert dilated(square, 2)[0:7, 0:7].all() and dilated(square, 2).sum() == 49
    region = moved_region([square], [(10, 0)], 1)
    assert region[1:6, 1:6].all() and region[1:6, 11:16].all()  # where it was, where it goes, a pixel around
    assert not region[3, 8] and not region[10, 3]  # not the way between, nothing else


def test_the_moved_edit_region_keeps_what_the_drag_leaves_alone_inside_the_mask(tiny_model, blob_image):
    image = blob_image.copy()
    image[48:58, 48:58] = (30, 30, 220)  # a blue square inside the mask, away from the drag
    mask = np.zeros((64, 64), bool)
    mask[8:62, 8:62] = True
    edits = {}
    for region in ("mask", "moved"):
        settings = dataclasses.replace(FAST, denoise=dataclasses.replace(
            FAST.denoise, edit_region=region, moved_beyond=0.0, blend_outside_mask=True, paste_outside=True))
        session = DragSession(tiny_model, image, "a red disc", settings)
        session.set_points([(24, 24, 30, 24)])
        session.set_mask(mask)
        edits[region] = session.run().image
        if region == "moved":
            found = session._edit_region((16, 16))
            assert found[24, 24] and found[24, 40] and not found[52, 52] and not found[2, 2]
            session.settings = dataclasses.replace(settings, denoise=dataclasses.replace(settings.denoise,
                                                                                         moved_beyond=0.2))
            assert session._edit_region((16, 16)) is session.mask  # 6 px < a fifth of 64: the whole mask
    square = np.s_[47:59, 47:59]
    assert not np.array_equal(edits["mask"][square], image[square])  # the whole mask is regenerated
    assert np.array_equal(edits["moved"][square], image[square])  # only the disc's places are


def test_the_longest_drags_start_from_the_inverted_image_with_their_object_moved(tiny_model, blob_image):
    settings = dataclasses.replace(FAST, drag=dataclasses.replace(FAST.drag, start="copy", copy_beyond=0.0,
                                                                  image_copy="denoise", image_beyond=0.2))
    session = DragSession(tiny_model, blob_image, "a red disc", settings)
    session.set_points([(24, 24, 50, 24), (50, 50, 53, 50)])  # the red disc 26 px right; a short drag on the gray
    edit = session.run()
    moved = edit.drag.extras["moved_start"].image
    disc = blob_image[24, 24]
    assert (moved[24, 50] == disc).all() and not (moved[24, 24] == disc).all()  # the disc moved, its place filled
    assert np.array_equal(moved[40:], blob_image[40:])  # the short drag's object is not moved in the image
    assert edit.drag.initial_handles.tolist() == [[12.0, 12.0], [25.0, 25.0]]  # the user's handles, for the views
    assert edit.drag.handles.tolist() == [[12.0, 25.0], [25.0, 25.0]]  # the loop starts at the disc's target,
    assert edit.drag.stop_reason == "reached" and not edit.drag.history  # the other within stop_distance: done
    assert session._footprints((16, 16))[0].sum() == 0  # the disc is not copied again by latent cells
    assert edit.denoise.kept is None  # "denoise": the moved image's z_t is denoised
    session.settings = dataclasses.replace(settings, drag=dataclasses.replace(settings.drag, image_copy="keep"))
    assert session.run().denoise.kept is None  # "keep" with a pair left to the loop: denoised all the same
    session.set_points([(24, 24, 50, 24)])
    kept = session.run()  # "keep", every pair moved in the image: that image is the edit
    assert kept.denoise.kept is not None and np.array_equal(kept.image, kept.drag.extras["moved_start"].image)
    assert (kept.image[24, 50] == disc).all() and np.array_equal(kept.image[40:], blob_image[40:])
    zt, t, text = _inputs(tiny_model)
    h, g = torch.tensor([[8.0, 8.0]]), torch.tensor([[8.0, 20.0]])
    start = MovedStart(zt + 1.0, zt, torch.tensor([True]), blob_image)
    every = drag(tiny_model, zt, t, text, h, g, None, settings.drag, schedule_steps=20,
                 footprints=np.zeros((1, 16, 16), bool), moved=start)
    assert every.stop_reason == "reached" and not every.history  # every pair moved: nothing to drag,
    assert torch.equal(every.latent, zt + 1.0) and torch.equal(every.original_latent, zt + 1.0)  # the moved image
    # is both the start and the unedited branch the denoising reads
    some = MovedStart(zt + 1.0, zt, torch.tensor([True, False]), blob_image)
    two = drag(tiny_model, zt, t, text, torch.tensor([[8.0, 8.0], [4.0, 4.0]]), torch.tensor([[8.0, 20.0], [4.0, 9.0]]),
               None, settings.drag, schedule_steps=20, footprints=np.zeros((2, 16, 16), bool), moved=some)
    assert two.history and torch.equal(two.history[0].handles[0], torch.tensor([8.0, 20.0]))  # the loop drags the
    assert torch.equal(two.original_latent, zt)  # other pair from the moved start; the unedited branch is the source's


def test_the_vacated_place_is_where_the_objects_were_grown_by_a_pixel_less_where_they_land():
    footprints = np.zeros((2, 20, 20), bool)
    footprints[0, 2:5, 2:5] = True
    footprints[1, 10:13, 10:13] = True
    left = vacated(footprints, np.array([[2, 0], [0, 0]]), None)  # the first 2 px right; the second stays
    assert left[1:6, 1:4].all() and not left[2:5, 4:7].any()  # its place and rim, less where it lands
    assert not left[10:13, 10:13].any() and left[9, 9:14].all()  # an object that stays covers its place ...
    editable = np.ones((20, 20), bool)
    editable[:, :3] = False
    assert not vacated(footprints, np.array([[2, 0], [0, 0]]), editable)[:, :3].any()  # ... only inside the mask


def test_repainting_keeps_the_known_cells_and_paints_the_others(tiny_model):
    _, _, text = _inputs(tiny_model)
    z0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    quick = dataclasses.replace(FAST.drag, repaint_steps=4, repaint_jump=2, repaint_resample=2)
    known = torch.ones(1, 1, 16, 16)
    assert torch.allclose(repaint(tiny_model, z0, known, text, quick), z0, atol=1e-4)  # nothing to paint
    known[:, :, 4:9, 4:9] = 0.0
    painted = repaint(tiny_model, z0, known, text, quick)
    assert torch.allclose(painted[:, :, 10:], z0[:, :, 10:], atol=1e-4)  # the known cells as they were
    assert (painted[:, :, 4:9, 4:9] - z0[:, :, 4:9, 4:9]).abs().mean() > 0.1 and painted.isfinite().all()
    assert torch.equal(painted, repaint(tiny_model, z0, known, text, quick))  # seeded: the same twice
    other = repaint(tiny_model, z0, known, text, dataclasses.replace(quick, repaint_seed=1))
    assert not torch.equal(painted, other)


def test_without_lora_runs_the_base_unet_and_puts_the_adapter_back(tiny_model, blob_image):
    settings = dataclasses.replace(FAST, lora=dataclasses.replace(FAST.lora, steps=2, lr=0.05))
    session = DragSession(tiny_model, blob_image, "a red disc", settings)
    session.run_lora()
    zt, t, text = _inputs(tiny_model)  # takes the LoRA off: put it back
    apply_lora(tiny_model, session.run_lora())
    unet = tiny_model.pipe.unet
    adapted = unet(zt, t, encoder_hidden_states=text).sample
    with without_lora(unet):
        bare = unet(zt, t, encoder_hidden_states=text).sample
    assert torch.equal(unet(zt, t, encoder_hidden_states=text).sample, adapted)  # on again
    remove_lora(tiny_model.pipe)
    assert torch.equal(unet(zt, t, encoder_hidden_states=text).sample, bare) and not torch.equal(bare, adapted)


def test_the_repaint_fill_paints_only_the_place_the_object_left(tiny_model, blob_image):
    quick = dataclasses.replace(FAST.drag, start="copy", image_copy="keep", repaint_steps=4, repaint_jump=2,
                                repaint_resample=2)
    images = {}
    for fill in ("bilateral", "repaint"):
        session = DragSession(tiny_model, blob_image, "a red disc",
                              dataclasses.replace(FAST, drag=dataclasses.replace(quick, image_fill=fill)))
        session.set_points([(24, 24, 50, 24)])  # the red disc 26 px right
        images[fill] = session.run().image
    region = vacated(np.stack([session._object((24, 24))]), np.array([[26, 0]]), None)
    assert region[24, 24] and not region[24, 50]
    assert np.array_equal(images["repaint"][~region], images["bilateral"][~region])  # the rest, the disc moved
    assert not np.array_equal(images["repaint"][region], images["bilateral"][region])  # its place painted anew
