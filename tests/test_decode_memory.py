"""Decoding within a memory budget: early downscaling to ``fetch.max_side``, no full-size extra copies.

Pillow allocates pixel buffers with ``malloc``, which ``tracemalloc`` does not see, so the peak is
measured as resident memory of a fresh child process per case that has already imported everything
and decoded a tiny image of the same format: its peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the decode) minus its RSS then. ``ru_maxrss`` would not do:
Linux carries it over from the forking parent, here a pytest process that holds large images.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clothes_search.settings import FetchSettings
from ingestion.images import decode_image
from ingestion.images.decode import to_rgb

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
SIZE = (4000, 2500)  # 10 Mpx
FG = {"RGB": (200, 30, 30), "RGBA": (200, 30, 30, 128), "I;16": 60000, "I": 60000, "F": 0.75}
BG = {"RGB": (20, 20, 200), "RGBA": (0, 0, 0, 0), "I;16": 1000, "I": 1000, "F": 0.25}
#: the decoded colour inside a foreground stripe (RGBA: half-transparent red on white)
EXPECTED_FG = {"RGB": (200, 30, 30), "RGBA": (227, 142, 142), "I;16": (233,) * 3, "I": (233,) * 3}
EXPECTED_FG["F"] = (191, 191, 191)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def stripes(mode: str, size: tuple[int, int] = SIZE) -> Image.Image:
    """Vertical 100-pixel foreground stripes every 200 pixels: compresses to a few tens of KB."""
    image = Image.new(mode, size, BG[mode])
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 200):
        draw.rectangle((x, 0, x + 99, size[1] - 1), fill=FG[mode])
    return image


def noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size[::-1], dtype=np.uint16))
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)).convert(mode)


_CHILD = """
import json, sys
from pathlib import Path
from clothes_search.settings import FetchSettings
from ingestion.images.decode import decode_image

def resident(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1]) * 1024  # kB

data, warm_up = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()
decode_image(warm_up, FetchSettings(max_side=8))  # imports the plugin and runs the downscaling path
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = resident("VmRSS:")
loaded = decode_image(data, FetchSettings())  # max_side 2048
extra = resident("VmHWM:") - before
x = round(50 * loaded.image.width / loaded.original_size[0])  # inside the first stripe
y = loaded.image.height // 2
print(json.dumps({"extra": extra, "size": loaded.image.size, "original_size": loaded.original_size,
                  "pixel": loaded.image.getpixel((x, y))}))
"""

_MEASURABLE = Path("/proc/self/clear_refs").exists()
_NOT_MEASURABLE = "measures resident memory through Linux's /proc/self/status and clear_refs"


def _decode_in_child(tmp_path: Path, data: bytes, warm_up: bytes) -> dict[str, object]:
    (tmp_path / "image").write_bytes(data)
    (tmp_path / "warm_up").write_bytes(warm_up)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "image"), str(tmp_path / "warm_up")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _rgb_bytes(size: tuple[int, int]) -> int:
    return size[0] * size[1] * 4  # Pillow keeps RGB at 4 bytes per pixel


# (name, encoded 10 Mpx image, its stored mode, bytes per stored pixel). Before the early downscaling
# these cost +77 MiB (RGB PNG), +191 MiB (RGBA PNG), +269 MiB (16-bit PNG), +316 MiB (F and I TIFF).
CASES: list[tuple[str, Callable[[], bytes], str, int]] = [
    ("rgb-png", lambda: encode(stripes("RGB"), "PNG"), "RGB", 4),
    ("rgba-png", lambda: encode(stripes("RGBA"), "PNG"), "RGBA", 4),
    ("16-bit-png", lambda: encode(stripes("I;16"), "PNG"), "I;16", 2),
    ("float-tiff", lambda: encode(stripes("F"), "TIFF", compression="tiff_deflate"), "F", 4),
    ("int32-tiff", lambda: encode(stripes("I"), "TIFF", compression="tiff_deflate"), "I", 4),
]


@pytest.mark.skipif(not _MEASURABLE, reason=_NOT_MEASURABLE)
@pytest.mark.parametrize(("make", "mode", "stored_bytes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decoding_10_megapixels_costs_one_frame_plus_the_result(
    tmp_path: Path, make: Callable[[], bytes], mode: str, stored_bytes: int
) -> None:
    """Bound: the frame in its stored mode + the 2048x1280 RGB result + 16 MiB.

    That is < 64 MiB for the 4-byte modes and < 46 MiB for 16-bit grey, where the old path took
    77-316 MiB: converting the whole frame (float64 grey, RGBA copies) before anything was reduced.
    """
    data = make()
    assert len(data) < 300_000
    fmt = "TIFF" if mode in ("F", "I") else "PNG"
    result = _decode_in_child(tmp_path, data, encode(stripes(mode, (40, 24)), fmt))
    bound = SIZE[0] * SIZE[1] * stored_bytes + _rgb_bytes((2048, 1280)) + 16 * MIB
    assert result["extra"] < bound, f"{mode}: +{result['extra'] / MIB:.1f} MiB, bound {bound / MIB:.1f} MiB"
    assert result["original_size"] == list(SIZE)
    assert result["size"] == [2048, 1280]
    expected = EXPECTED_FG[mode]
    assert all(abs(a - b) <= 3 for a, b in zip(result["pixel"], expected, strict=True)), result["pixel"]


@pytest.mark.skipif(not _MEASURABLE, reason=_NOT_MEASURABLE)
def test_large_jpeg_is_decoded_at_reduced_scale_within_budget(tmp_path: Path) -> None:
    """6000x4000 JPEG: libjpeg decodes it at 1/2 scale (3000x2000) directly, never at 24 Mpx.

    Bound: the half-scale frame + the 2048x1365 result + 16 MiB (< 50 MiB); the old path took
    +184 MiB (the full 24 Mpx frame and a copy of it).
    """
    data = encode(stripes("RGB").resize((6000, 4000)), "JPEG", quality=90)
    result = _decode_in_child(tmp_path, data, encode(stripes("RGB", (40, 24)), "JPEG"))
    bound = _rgb_bytes((3000, 2000)) + _rgb_bytes((2048, 1365)) + 16 * MIB
    assert result["extra"] < bound, f"+{result['extra'] / MIB:.1f} MiB, bound {bound / MIB:.1f} MiB"
    assert result["size"] == [2048, 1365] and result["original_size"] == [6000, 4000]


def test_large_jpeg_size_scale_and_orientation() -> None:
    image = stripes("RGB").resize((6000, 4000))
    loaded = decode_image(encode(image, "JPEG", quality=90), FetchSettings())
    assert max(loaded.image.size) <= 2048 and loaded.image.size == (2048, 1365)
    assert loaded.original_size == (6000, 4000)
    assert loaded.scale == pytest.approx(6000 / 2048) and round(loaded.scale, 2) == 2.93
    x, y = 50, 600  # original pixels inside the first red stripe (stripes are 150 px wide here)
    red = loaded.image.getpixel((round(x / loaded.scale), round(y / loaded.scale)))
    assert red[0] > 180 and red[2] < 60

    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: upright it is 4000 wide, 6000 high
    rotated = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=90), FetchSettings())
    assert rotated.original_size == (4000, 6000) and rotated.image.size == (1365, 2048)
    assert rotated.scale == pytest.approx(6000 / 2048)
    top = rotated.image.getpixel((rotated.image.width // 2, 20))  # the stored left edge, now on top
    assert top[0] > 180 and top[2] < 60


def test_reduction_honours_max_side_exactly() -> None:
    fits = decode_image(encode(noise("RGB", (64, 40)), "PNG"), FetchSettings(max_side=64))
    assert fits.image.size == (64, 40) and fits.scale == 1.0
    over = decode_image(encode(noise("RGB", (40, 65)), "PNG"), FetchSettings(max_side=64))
    assert over.image.size == (39, 64) and over.original_size == (40, 65)
    assert over.scale == pytest.approx(65 / 64)


def _alpha_on_white(image: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    canvas.alpha_composite(image.convert("RGBA"))
    return canvas.convert("RGB")


@pytest.mark.parametrize(
    ("fmt", "mode", "reference"),
    [
        ("PNG", "RGB", lambda im: im.convert("RGB")),
        ("JPEG", "RGB", lambda im: im.convert("RGB")),  # no draft: decoded at full scale
        ("PNG", "RGBA", _alpha_on_white),
        ("WEBP", "RGBA", _alpha_on_white),
    ],
)
def test_small_image_is_unchanged(
    fmt: str, mode: str, reference: Callable[[Image.Image], Image.Image]
) -> None:
    data = encode(noise(mode, (300, 200)), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    loaded = decode_image(data, FetchSettings())
    assert loaded.scale == 1.0 and loaded.image.size == loaded.original_size == (300, 200)
    with Image.open(io.BytesIO(data)) as opened:
        assert loaded.image.tobytes() == reference(opened).tobytes()


def test_16_bit_grey_is_rounded_like_float64_for_every_value() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    loaded = decode_image(encode(Image.fromarray(values), "PNG"), FetchSettings())
    expected = np.clip(np.rint(values.astype(np.float64) * 255 / 65535), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(loaded.image)[..., 0], expected)


@pytest.mark.parametrize(
    ("fmt", "image"),
    [
        ("PNG", noise("RGBA", (1000, 700), seed=1)),
        ("GIF", noise("RGB", (1000, 700), seed=2).convert("P")),
        ("PNG", noise("I;16", (700, 1000), seed=3)),
    ],
    ids=["rgba", "palette", "16-bit"],
)
def test_band_by_band_downscaling_equals_one_resize(fmt: str, image: Image.Image) -> None:
    """The banded conversion joins without seams: equal to converting and resizing in one go."""
    loaded = decode_image(encode(image, fmt), FetchSettings(max_side=300))
    with Image.open(io.BytesIO(encode(image, fmt))) as opened:
        expected = to_rgb(opened).resize(loaded.image.size, Image.Resampling.BICUBIC)
    assert max(loaded.image.size) == 300 and loaded.original_size == image.size
    diff = np.abs(np.asarray(loaded.image, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    assert diff.max() <= 1


def test_grey_scaling_is_the_same_for_every_band() -> None:
    """A 32-bit image dark at the top and bright below is scaled by its overall peak in every band."""
    values = np.full((1000, 400), 200, dtype=np.int32)
    values[500:] = 60000
    loaded = decode_image(encode(Image.fromarray(values), "TIFF"), FetchSettings(max_side=200))
    grey = np.asarray(loaded.image)[..., 0]
    assert loaded.image.size == (80, 200)
    assert abs(int(grey[10, 40]) - 1) <= 1  # 200 * 255 / 65535, not 200 as a band of its own would make it
    assert abs(int(grey[190, 40]) - 233) <= 1
