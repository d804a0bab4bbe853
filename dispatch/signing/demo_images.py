"""DEMO images for the demo PKI (``dispatch.signing.demo``): the agency's seal and a leader's
handwritten signature, drawn with Pillow, each a PNG with a transparent background.

- ``seal_png``: a round seal in pure red (RGB 255/0/0), "DEMO" in its centre and "CON DẤU DEMO ·
  KHÔNG DÙNG THẬT" around its rim, about 4 cm across at the PNG's own dpi (as Decree 30 wants the
  seal at its real size).
- ``signature_png``: a blue, pen-like flourish, about 4 × 1.6 cm, that no one would take for a
  person's real signature.

Neither image belongs to anyone: they exist so that ``make run`` can show signed letters.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

SEAL_RED = (255, 0, 0)
SIGNATURE_BLUE = (16, 42, 160)
DPI = 300
SEAL_DIAMETER_CM = 4.0
RIM_TEXT = "CON DẤU DEMO · KHÔNG DÙNG THẬT · "
# Drawn this many times larger, then scaled down: Pillow's shapes have no anti-aliasing.
_SUPERSAMPLE = 3
_FONT = Path(__file__).resolve().parent.parent / "letters" / "fonts" / "LiberationSerif-Bold.ttf"


def _pixels(cm: float, dpi: int) -> int:
    return round(cm / 2.54 * dpi)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_FONT), size)


def _png(image, dpi: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(dpi, dpi), optimize=True)
    return out.getvalue()


def _downsample(image, size: tuple[int, int], colour: tuple[int, int, int]):
    """Scaled down to ``size``, every pixel in ``colour``: only the alpha channel draws (resizing
    leaves the transparent pixels black, which some viewers show at their edges)."""
    from PIL import Image

    alpha = image.getchannel("A").resize(size, Image.Resampling.LANCZOS)
    flat = Image.new("RGBA", size, (*colour, 0))
    flat.putalpha(alpha)
    return flat


def seal_png(*, dpi: int = DPI, diameter_cm: float = SEAL_DIAMETER_CM) -> bytes:
    """A round red DEMO seal, ``diameter_cm`` across at ``dpi``, on a transparent background."""
    from PIL import Image, ImageDraw

    final = _pixels(diameter_cm, dpi)
    size = final * _SUPERSAMPLE
    # Every pixel is the seal's red; only the alpha channel draws: the colour stays exact.
    image = Image.new("RGBA", (size, size), (*SEAL_RED, 0))
    draw = ImageDraw.Draw(image)
    ink = (*SEAL_RED, 255)
    centre = size / 2
    outer = size * 0.02
    draw.ellipse((outer, outer, size - outer, size - outer), outline=ink, width=round(size * 0.035))
    inner = size * 0.2
    draw.ellipse((inner, inner, size - inner, size - inner), outline=ink, width=round(size * 0.015))

    # "DEMO" across the middle.
    font = _font(round(size * 0.15))
    draw.text((centre, centre), "DEMO", font=font, fill=ink, anchor="mm")

    # The rim text, one letter at a time, each turned to face the centre.
    rim_font = _font(round(size * 0.075))
    radius = size * 0.365
    step = 2 * math.pi / len(RIM_TEXT)
    box = round(size * 0.12)
    for index, letter in enumerate(RIM_TEXT):
        if letter == " ":
            continue
        angle = -math.pi / 2 + index * step  # clockwise from the top
        tile = Image.new("RGBA", (box, box), (*SEAL_RED, 0))
        ImageDraw.Draw(tile).text((box / 2, box / 2), letter, font=rim_font, fill=ink, anchor="mm")
        turned = tile.rotate(-math.degrees(angle + math.pi / 2), resample=Image.Resampling.BICUBIC)
        x = centre + radius * math.cos(angle) - box / 2
        y = centre + radius * math.sin(angle) - box / 2
        image.alpha_composite(turned, (round(x), round(y)))
    return _png(_downsample(image, (final, final), SEAL_RED), dpi)


def signature_png(*, dpi: int = DPI, width_cm: float = 4.0, height_cm: float = 1.6) -> bytes:
    """A blue handwritten-looking flourish on a transparent background."""
    from PIL import Image, ImageDraw

    width, height = _pixels(width_cm, dpi), _pixels(height_cm, dpi)
    big = (width * _SUPERSAMPLE, height * _SUPERSAMPLE)
    image = Image.new("RGBA", big, (*SIGNATURE_BLUE, 0))
    draw = ImageDraw.Draw(image)
    ink = (*SIGNATURE_BLUE, 255)
    w, h = big

    def stroke(points: list[tuple[float, float]], thickness: float) -> None:
        # A pen's pressure: thin at both ends, full in the middle.
        for i in range(1, len(points)):
            t = i / len(points)
            pen = max(1, round(thickness * (0.35 + 0.65 * math.sin(math.pi * t))))
            draw.line((points[i - 1], points[i]), fill=ink, width=pen)
            draw.ellipse(
                (
                    points[i][0] - pen / 2,
                    points[i][1] - pen / 2,
                    points[i][0] + pen / 2,
                    points[i][1] + pen / 2,
                ),
                fill=ink,
            )

    # The main stroke: loops travelling right, like a quickly written name.
    main = []
    for i in range(400):
        t = i / 399
        turns = t * 3.5 * 2 * math.pi
        size = 0.34 * (1 - 0.55 * t) * (0.8 + 0.2 * math.sin(t * 7))
        x = w * (0.05 + 0.85 * t) + w * 0.05 * math.cos(turns) + w * 0.04 * (0.5 - abs(t - 0.5))
        y = h * (0.5 - 0.15 * t) - h * size * math.sin(turns) + h * 0.08 * math.sin(t * 11)
        main.append((x, y))
    stroke(main, h * 0.045)
    # An underline flourish back to the left.
    tail = []
    for i in range(200):
        t = i / 199
        x = w * (0.9 - 0.75 * t)
        y = h * (0.78 + 0.06 * math.sin(t * math.pi)) + h * 0.02 * t
        tail.append((x, y))
    stroke(tail, h * 0.03)
    return _png(_downsample(image, (width, height), SIGNATURE_BLUE), dpi)
