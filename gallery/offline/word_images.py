"""bench_ocr's data: photo-like images with known words drawn in Debian's TrueType fonts, at
several sizes, colours and rotations, over gradients, soft blotches and grain."""

import random
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageFont

FONT_FOLDERS = ("dejavu", "liberation", "freefont", "noto")
FONT_ROOT = Path("/usr/share/fonts/truetype")
# Not fonts for words: mathematical symbols, a CJK fallback, a hairline weight.
SKIPPED_FONTS = ("Math", "Fallback", "ExtraLight")
SIZES = ((640, 480), (800, 600), (1024, 768), (768, 1024), (1200, 800), (1600, 1200))
MAX_ROTATION_DEGREES = 15

# Common English words of 4 to 9 letters; every image's first word is its own (the keyword
# query for that image), the others may repeat.
VOCABULARY = """
able acid actor adult agent album alarm alley amber angle ankle apple april arena army arrow
artist atlas aunt autumn avenue bacon badge baker balcony ballet bamboo banana bandit banner
barrel basket battery beach beacon beard beaver bedroom belt bench berry bicycle biscuit
blanket blossom border bottle boulder bracket branch bread breeze brick bridge bronze brother
bucket buffalo bullet butter cabin cactus camera candle canyon captain carbon carpet castle
cattle cellar cement cereal chalk channel chapel cheese cherry chicken chimney circus citizen
clinic closet cloud coach cobalt coffee collar comet copper corner cotton cousin crater
crystal cupboard curtain cushion dancer danger dentist desert diamond dinner doctor dolphin
donkey dragon drawer driver eagle echo editor elbow engine escape fabric falcon farmer
feather fence ferry festival fiber finger forest fossil fountain frame friday fridge garden
garlic gentle ghost giant ginger glacier glass globe glove gold granite grape gravel guitar
hammer harbor harvest helmet herald hockey honey horizon hotel island ivory jacket jaguar
jelly jersey jungle kettle kitchen ladder lagoon lantern laptop lemon letter lizard lobster
magnet mango marble market meadow medal melon mirror monday monkey morning mosaic motor
muffin museum mustard needle nickel noodle number ocean office olive onion orange orchid
oyster paddle palace panda paper parade parrot pencil pepper piano pickle pillow pilot planet
pocket poetry police potato powder puzzle rabbit radio rainbow record ribbon river rocket
saddle salmon salt sandal saturday school season shadow shelter silver sister soccer spider
spinach spring square station statue street studio sugar summer sunday sunset supper
sweater tablet teacher temple tennis theater thunder ticket tiger timber tomato tower tractor
travel tunnel turkey turtle umbrella valley velvet violin volcano wagon walnut window winter
wizard yellow zebra
""".split()


def font_files() -> list[Path]:
    fonts = [
        path
        for folder in FONT_FOLDERS
        for path in sorted((FONT_ROOT / folder).glob("*.ttf"))
        if not any(skip in path.name for skip in SKIPPED_FONTS)
    ]
    if not fonts:
        raise RuntimeError(
            f"No TrueType fonts under {FONT_ROOT}: apt-get install fonts-dejavu-core "
            "fonts-liberation fonts-freefont-ttf"
        )
    return fonts


def photo_like_background(rng: random.Random, size: tuple[int, int]) -> PILImage.Image:
    """A gradient under soft blotches of colour and sensor grain: smooth regions and edges,
    the way a photo's background is, without any letter-like shape."""
    width, height = size
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    mask = PILImage.linear_gradient("L").resize(size)
    if rng.random() < 0.5:
        mask = mask.rotate(rng.choice((90, 180, 270)), expand=False)
    picture = PILImage.composite(
        PILImage.new("RGB", size, bottom), PILImage.new("RGB", size, top), mask
    )
    blotches = PILImage.new("RGB", size, (0, 0, 0))
    alpha = PILImage.new("L", size, 0)
    draw, draw_alpha = ImageDraw.Draw(blotches), ImageDraw.Draw(alpha)
    for _ in range(rng.randrange(3, 9)):
        radius = rng.uniform(0.08, 0.35) * min(size)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        box = (x - radius, y - radius * rng.uniform(0.5, 1.5), x + radius, y + radius)
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        draw_alpha.ellipse(box, fill=rng.randrange(60, 200))
    blur = ImageFilter.GaussianBlur(min(size) / rng.uniform(12, 40))
    picture = PILImage.composite(blotches.filter(blur), picture, alpha.filter(blur))
    grain = PILImage.effect_noise(size, rng.uniform(8, 30)).convert("RGB")
    return PILImage.blend(picture, grain, rng.uniform(0.04, 0.12))


def _contrasting_colour(rng: random.Random, background) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    if luminance > 128:
        return tuple(rng.randrange(0, 90) for _ in range(3))
    return tuple(rng.randrange(180, 256) for _ in range(3))


def draw_words(
    rng: random.Random, picture: PILImage.Image, lines: list[str], fonts: list[Path]
) -> None:
    """Each line in its own horizontal band, in its own font, size, colour and rotation."""
    width, height = picture.size
    band = height / len(lines)
    for index, line in enumerate(lines):
        font_size = int(rng.uniform(0.05, 0.13) * min(width, height))
        font = ImageFont.truetype(str(rng.choice(fonts)), font_size)
        while font.getlength(line) > 0.85 * width and font_size > 12:
            font_size = int(font_size * 0.85)
            font = ImageFont.truetype(font.path, font_size)
        left, top, right, bottom = font.getbbox(line)
        margin = font_size // 3
        layer = PILImage.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
        ImageDraw.Draw(layer).text((margin - left, margin - top), line, font=font, fill=255)
        layer = layer.rotate(
            rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES),
            resample=PILImage.Resampling.BICUBIC,
            expand=True,
        )
        x = rng.uniform(0, max(1, width - layer.width))
        y = index * band + rng.uniform(0, max(1, band - layer.height))
        x, y = int(x), int(max(0, min(y, height - layer.height)))
        patch = picture.crop((x, y, x + layer.width, y + layer.height)).resize((1, 1))
        colour = _contrasting_colour(rng, patch.getpixel((0, 0)))
        picture.paste(PILImage.new("RGB", layer.size, colour), (x, y), layer)


def text_sample(rng: random.Random, own_word: str, fonts) -> tuple[PILImage.Image, list[str]]:
    picture = photo_like_background(rng, rng.choice(SIZES))
    words = [own_word] + [rng.choice(VOCABULARY) for _ in range(rng.randrange(0, 4))]
    cased = [rng.choice((str.upper, str.capitalize, str.lower))(word) for word in words]
    lines, rest = [], list(cased)
    while rest:
        take = rng.choice((1, 2))
        lines.append(" ".join(rest[:take]))
        rest = rest[take:]
    draw_words(rng, picture, lines, fonts)
    return picture, words
