"""load_image on the bad-file zoo: RGB out for every good image, ImageDecodeError naming the file for bad ones."""

import importlib.util
import os
from pathlib import Path

import pytest
from PIL import Image, ImageFile, ImageStat

from mllm.data.images import ImageDecodeError, load_image

_spec = importlib.util.spec_from_file_location("image_zoo", Path(__file__).parents[1] / "infer" / "image_zoo.py")
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

GOOD = zoo.good_images()
BAD = zoo.bad_images()


def _mean(image: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image).mean)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_images_decode_to_rgb_with_the_right_colour(name):
    data, colour = GOOD[name]
    image = load_image(data, name=name)
    assert image.mode == "RGB"
    if name != "exif_rotated.jpg":  # half red, half blue: checked on its own below
        expected = {"red": (255, 0, 0), "green": (0, 255, 0), "magenta": (255, 0, 255), "white": (255, 255, 255),
                    "blue": (0, 0, 255), "yellow": (255, 255, 0)}[colour]
        assert all(abs(a - b) < 8 for a, b in zip(_mean(image), expected)), (name, _mean(image))


def test_exif_orientation_is_applied():
    image = load_image(zoo.exif_rotated_jpeg())
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 50, top
    assert bottom[2] > 200 and bottom[0] < 50, bottom


@pytest.mark.parametrize("name", sorted(n for n in BAD if BAD[n][0] is not None))
def test_bad_bytes_raise_an_error_naming_the_image_and_reason(name):
    data, words = BAD[name]
    with pytest.raises(ImageDecodeError) as caught:
        load_image(data, name=f"shard7/{name}")
    assert isinstance(caught.value, ValueError)
    assert f"shard7/{name}" in str(caught.value) and words in str(caught.value)


def test_paths_work_and_unreadable_paths_name_the_file(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(GOOD["good_red.png"][0])
    assert load_image(path).size == (16, 16)
    assert load_image(str(path)).getpixel((0, 0)) == (255, 0, 0)
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ImageDecodeError, match="missing.jpg: cannot read file"):
        load_image(missing)
    os.symlink(missing, tmp_path / "dangling.jpg")
    with pytest.raises(ImageDecodeError, match="dangling.jpg"):
        load_image(tmp_path / "dangling.jpg")
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(tmp_path)  # a folder


def test_bomb_guard_rejects_from_the_header_and_is_configurable():
    header_only = zoo.encode(Image.new("1", (3000, 3000)))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(header_only, max_pixels=1_000_000)
    assert load_image(header_only, max_pixels=0).size == (3000, 3000)
    assert load_image(header_only).size == (3000, 3000)


def test_truncated_images_stay_errors_and_global_setting_is_untouched():
    data = BAD["truncated.jpg"][0]
    for _ in range(2):
        with pytest.raises(ImageDecodeError):
            load_image(data)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
