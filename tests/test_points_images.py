import numpy as np
import pytest
import torch
from PIL import Image

from dragnb.errors import InputError
from dragnb.images import load_mask, mask_to_latent, model_size, to_rgb_array
from dragnb.points import grid_to_image, image_to_grid, make_points, parse_points


def test_parse_points_pairs():
    p = parse_points("10,20,30,40; 1 2 3 4", (50, 60))
    assert p.handles.tolist() == [[10, 20], [1, 2]] and p.targets.tolist() == [[30, 40], [3, 4]]
    assert p.as_list() == [[10, 20], [30, 40], [1, 2], [3, 4]]


@pytest.mark.parametrize("text,match", [("1,2,3", "has 3 numbers"), ("a,b,c,d", "not four numbers"),
                                        ("", "no handle/target pair"), ("70,2,3,4", "outside"),
                                        ("1,2,3,55", "target of pair 0")])
def test_bad_points_name_the_argument(text, match):
    with pytest.raises(InputError, match=match) as info:
        parse_points(text, (50, 60))
    assert info.value.argument == "--points"


def test_unpaired_alternating_points():
    with pytest.raises(InputError, match="even number"):
        make_points([[1, 2], [3, 4], [5, 6]], (10, 10))


def test_grid_round_trip_non_square():
    xy = np.array([[10.0, 20.0], [79.0, 47.0]])
    rc = image_to_grid(xy, (48, 80), (20, 32))
    assert rc[0].tolist() == pytest.approx([20 * 20 / 48, 10 * 32 / 80])
    np.testing.assert_allclose(grid_to_image(rc, (48, 80), (20, 32)), xy, rtol=1e-6)


def test_model_size_keeps_aspect_without_cropping():
    assert model_size((512, 512), 512, 64) == (512, 512)
    assert model_size((480, 640), 512, 64) == (384, 512)
    assert model_size((100, 30), 64, 8) == (64, 16)


def test_image_modes(tmp_path):
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest transparent -> white
    out = to_rgb_array(rgba)
    assert out.shape == (5, 7, 3) and out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    gray = to_rgb_array(Image.fromarray(np.full((4, 6), 77, np.uint8)))
    assert gray.shape == (4, 6, 3) and (gray == 77).all()
    sixteen = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    path = tmp_path / "16.png"
    sixteen.save(path)
    assert (to_rgb_array(path) == 255).all()


def test_corrupt_image_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="not a readable image"):
        to_rgb_array(bad, "--image")


def test_masks():
    assert load_mask(None, (4, 4)) is None
    assert load_mask(np.zeros((4, 4)), (4, 4)) is None  # all zero: whole image editable
    m = load_mask(np.eye(4) * 255, (4, 4))
    assert m.dtype == bool and m.sum() == 4
    with pytest.raises(InputError, match="mask is 5x4"):
        load_mask(np.ones((4, 5)), (4, 4))
    lat = mask_to_latent(np.ones((8, 8), bool), (2, 2))
    assert lat.shape == (1, 1, 2, 2) and torch.all(lat == 1)


def test_mask_to_latent_modes():
    """Columns 1-5 editable on 8 x 8 pixels, 2 x 2 latent cells of 4 x 4: each mode's reading of the two columns."""
    mask = np.zeros((8, 8), dtype=bool)
    mask[:, 1:6] = True
    expected = {"nearest": [0.0, 1.0], "centre": [1.0, 0.0], "inside": [0.0, 0.0], "area": [0.75, 0.5]}
    for mode, row in expected.items():
        latent = mask_to_latent(mask, (2, 2), mode)
        assert latent.shape == (1, 1, 2, 2)
        assert latent[0, 0].tolist() == [row, row], mode
    with pytest.raises(ValueError, match="mode"):
        mask_to_latent(mask, (2, 2), "bilinear")
    import typing

    from dragnb.config import DenoiseSettings
    from dragnb.images import LATENT_MASK_MODES

    assert typing.get_args(typing.get_type_hints(DenoiseSettings)["blend_mask"]) == LATENT_MASK_MODES


def test_points_on_the_last_pixels_are_held_on_the_grid():
    from dragnb.points import held_on_grid

    rc = image_to_grid(np.array([[63.0, 63.0], [10.0, 0.0]]), (64, 64), (32, 32))
    assert rc[0].tolist() == [31.5, 31.5]  # the plain scaling, grid_to_image's inverse
    held = held_on_grid(rc, (32, 32))
    assert held.tolist() == [[31.0, 31.0], [0.0, 5.0]]  # the last pixel held, a point inside left as it is
    assert held.round().max() <= 31


def test_paste_outside_keeps_the_users_pixels_where_nothing_may_change():
    from dragnb.images import paste_outside

    source, edited = np.full((32, 32, 3), 10, np.uint8), np.full((32, 32, 3), 200, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    sharp = paste_outside(source, edited, mask, blur=0)
    assert (sharp[mask] == 200).all() and (sharp[~mask] == 10).all()  # exactly the user's pixels outside
    soft = paste_outside(source, edited, mask, blur=2)
    assert (soft[0, 0] == 10).all() and (soft[16, 16] == 200).all()  # far from the edge: as before
    assert 10 < soft[7, 16, 0] < soft[8, 16, 0] < 200  # at the edge: a blend, rising into the mask
