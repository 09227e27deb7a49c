"""Generator styles: what a split's garments, backgrounds, studios and camera defects may look like.

Two styles share no palette colour, pattern, background family or studio: ``seen`` makes the
``train`` and ``validation`` splits, ``unseen`` the ``validation_unseen`` split, so that its figures
measure how models trained on one world do on photos of another (other colours and prints, other
places, other cameras), not memory of the generator. :func:`check_disjoint` proves it at import.
"""

from __future__ import annotations

from dataclasses import dataclass

from clothes_search.sample_data.garments import PALETTE, Colour, Pattern


@dataclass(frozen=True)
class Defects:
    """The ranges a consumer photo's garment is degraded within."""

    brightness: tuple[float, float]
    colour_gain: float  # each channel's gain within 1 ± this
    rotation_sd: float  # degrees
    blur_probability: float
    blur_radius: tuple[float, float]
    jpeg_quality: tuple[int, int]
    noise_sd: tuple[float, float]  # sensor noise, in 0..1 units


@dataclass(frozen=True)
class Style:
    """One generator world."""

    name: str
    palette: tuple[Colour, ...]
    patterns: tuple[Pattern, ...]
    photos: tuple[str, ...]  # background photos (file names, see sources.BACKGROUND_PHOTOS)
    procedural: tuple[str, ...]  # procedural background kinds (see backgrounds.py)
    procedural_share: float  # of the consumer photos
    studio: str  # "light": near-white backdrops; "tinted": coloured pastel backdrops
    defects: Defects

    @property
    def background_families(self) -> tuple[str, ...]:
        return (
            *(f"photo:{name}" for name in self.photos),
            *(f"procedural:{kind}" for kind in self.procedural),
        )


UNSEEN_PALETTE: tuple[Colour, ...] = (
    Colour("coral", (240, 110, 90)),
    Colour("lavender", (160, 140, 210)),
    Colour("mustard", (200, 160, 20)),
    Colour("mint", (130, 210, 170)),
    Colour("plum", (90, 30, 80)),
    Colour("rust", (170, 70, 30)),
    Colour("sky", (110, 170, 230)),
    Colour("charcoal", (60, 64, 70)),
    Colour("cream", (238, 228, 200)),
    Colour("magenta", (200, 30, 140)),
    Colour("forest", (24, 80, 40)),
    Colour("sand", (190, 160, 110)),
)

SEEN = Style(
    name="seen",
    palette=PALETTE,
    patterns=(Pattern.PLAIN, Pattern.STRIPES, Pattern.DOTS, Pattern.CHECKS),
    photos=("building.jpg", "home.jpg", "leuvenA.jpg", "leuvenB.jpg", "stuff.jpg", "fruits.jpg"),
    procedural=("gradient", "noise"),
    procedural_share=0.3,
    studio="light",
    defects=Defects(
        brightness=(0.72, 1.12),
        colour_gain=0.12,
        rotation_sd=7.0,
        blur_probability=0.5,
        blur_radius=(0.4, 1.4),
        jpeg_quality=(30, 75),
        noise_sd=(0.0, 0.0),
    ),
)

UNSEEN = Style(
    name="unseen",
    palette=UNSEEN_PALETTE,
    patterns=(Pattern.ZIGZAG, Pattern.PLAID, Pattern.BLOTCHES),
    photos=("left.jpg", "board.jpg", "squirrel_cls.jpg", "aero3.jpg"),
    procedural=("tiles", "waves"),
    procedural_share=0.4,
    studio="tinted",
    defects=Defects(
        brightness=(0.6, 1.25),
        colour_gain=0.18,
        rotation_sd=11.0,
        blur_probability=0.7,
        blur_radius=(0.8, 2.2),
        jpeg_quality=(18, 55),
        noise_sd=(0.01, 0.035),
    ),
)

STYLES = {style.name: style for style in (SEEN, UNSEEN)}


def check_disjoint(a: Style, b: Style) -> None:
    """Raise ValueError when two styles share a colour (by name or value), a pattern, a background
    family or a studio."""
    shared = (
        {c.name for c in a.palette} & {c.name for c in b.palette}
        | {str(c.rgb) for c in a.palette} & {str(c.rgb) for c in b.palette}
        | {p.value for p in a.patterns} & {p.value for p in b.patterns}
        | set(a.background_families) & set(b.background_families)
        | ({a.studio} & {b.studio})
    )
    if shared:
        raise ValueError(f"styles {a.name!r} and {b.name!r} share {sorted(shared)}")


check_disjoint(SEEN, UNSEEN)
