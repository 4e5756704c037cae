"""load_image on the bad-file zoo: RGB out for every good image, ImageDecodeError naming the file for bad ones."""

import importlib.util
import os
import threading
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


def _load_in_thread(path, **options):
    """load_image in a daemon thread: (finished within 10 s, the exception it raised)."""
    outcome = {}

    def target():
        try:
            load_image(path, **options)
        except Exception as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    return not thread.is_alive(), outcome.get("error")


def test_only_regular_files_are_read_a_fifo_or_device_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", tmp_path / "to_fifo.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    for name in ("to_fifo.jpg", "zero.jpg"):
        finished, error = _load_in_thread(tmp_path / name)
        assert finished, f"{name}: load_image hung"
        assert isinstance(error, ImageDecodeError) and "not a regular file" in str(error) and name in str(error)
    os.symlink(tmp_path / "red.png", tmp_path / "link.png")  # a link to a regular file is fine
    (tmp_path / "red.png").write_bytes(GOOD["good_red.png"][0])
    assert load_image(tmp_path / "link.png").getpixel((0, 0)) == (255, 0, 0)


def test_a_path_with_a_nul_byte_is_a_decode_error():
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        load_image("photos/a\x00b.jpg")


def test_files_over_max_bytes_are_not_read(tmp_path):
    data = GOOD["good_red.png"][0]
    (tmp_path / "red.png").write_bytes(data)
    for source in (tmp_path / "red.png", data):
        with pytest.raises(ImageDecodeError, match="too large"):
            load_image(source, name="red.png", max_bytes=len(data) - 1)
        assert load_image(source, max_bytes=len(data)).size == (16, 16)
        assert load_image(source, max_bytes=0).size == (16, 16)  # 0 = no cap


def test_max_pixels_alone_decides_pillows_own_limit_does_not_refuse(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # 9 Mpx is over 2x this: Pillow raises
    big = zoo.encode(Image.new("1", (3000, 3000)))
    assert load_image(big, max_pixels=0).size == (3000, 3000)
    assert load_image(big, max_pixels=10_000_000).size == (3000, 3000)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(big, max_pixels=5_000_000)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # restored
