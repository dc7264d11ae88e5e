"""Pictures a person looks at: confusion matrices, grids of training images, prediction cards (with where the
model saw its class), training curves, thumbnails.

Drawn with PIL alone (no plotting library to install); TensorBoard and report.html show them.
"""
import functools
import math
import re
import unicodedata

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from images import UNREADABLE, load_rgb

# Fonts that cover more than ASCII, the first a machine has (Pillow looks a name up in the system's font
# folders): class names and paths such as "rosés" or "日本" drawn in Pillow's own font, which has ASCII only,
# come out as boxes. CJK first (Linux's Noto, Windows' YaHei, macOS's Arial Unicode), then Latin, Greek and
# Cyrillic (DejaVu on Linux, Arial on Windows), then Pillow's own.
FONT_FILES = ("NotoSansCJK-Regular.ttc", "msyh.ttc", "Arial Unicode.ttf", "DejaVuSans.ttf", "arial.ttf",
              "LiberationSans-Regular.ttf")

SPLIT_COLORS = {"train": (31, 119, 180), "val": (230, 120, 20), "test": (44, 160, 44)}


@functools.lru_cache(maxsize=None)
def font(size: int = 13):
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:  # not on this machine
            continue
    return ImageFont.load_default(size=size)


def letters_missing(text: str) -> str:
    """The letters of `text` that font() has none of, each once: drawn, each is its missing-letter box."""
    face = font(13)
    if not isinstance(face, ImageFont.FreeTypeFont):  # a Pillow without FreeType: its bitmap font, ASCII alone
        return "".join(dict.fromkeys(c for c in text if not c.isascii()))

    def drawn(letter: str):
        mask = face.getmask(letter)
        return mask.size, bytes(mask)
    box = drawn("\U0010ffff")  # a code point no font draws
    return "".join(dict.fromkeys(c for c in text if not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf")
                                 and drawn(c) == box))  # not a control or format character, which draws nothing


def letters_missing_notice(classes: list, pictures: str) -> str:
    """A notice of the letters of the class names that font() lacks (CJK, where only DejaVu is installed), which
    `pictures` would draw as boxes, with what to install; "" where it has them all."""
    missing = letters_missing("".join(classes))
    if not missing:
        return ""
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    emoji = any(0x1F000 <= ord(letter) < 0x1FB00 or 0x2600 <= ord(letter) < 0x27C0 for letter in missing)
    package = "fonts-noto-color-emoji for emoji" if emoji else "fonts-noto-cjk for Chinese, Japanese and Korean"
    return (f"notice: the fonts here have no letters for {shown} in the class names: {pictures} draw boxes for "
            f"them; a font with them fixes that (Debian: apt-get install {package})")


LABEL_WIDTH = 240  # px: the most a class's name takes as a label in a picture (shortened)


def pixel_width(text: str, size: int = 13) -> int:
    return int(font(size).getlength(text))


def one_line(text: str) -> str:
    """`text` with its control characters (a line break in a file's name) as "?": a line's width, which layouts
    here measure, is not defined for text that runs over lines."""
    return "".join("?" if unicodedata.category(letter) == "Cc" else letter for letter in text)


def shortened(name: str, most: int = LABEL_WIDTH, size: int = 13) -> str:
    """A class's name as a picture's label: at most `most` px wide, cut with "…" past it (a 200-letter name made the
    confusion matrix 1764 px wide for its labels, its grid a corner of it); the full name is in the tables."""
    name = one_line(name)
    if pixel_width(name, size) <= most:
        return name
    while name and pixel_width(name + "…", size) > most:
        name = name[:-1]
    return name + "…"


def confusion_matrix_image(confusion, classes: list, title: str = "confusion matrix") -> Image.Image:
    """Rows are the true classes, columns the predicted ones; each cell shows its count, shaded by
    the share of its row, so a class's errors stand out whatever its size."""
    classes = [shortened(name) for name in classes]
    n = len(classes)
    cell = max(14, min(56, 900 // max(n, 1)))
    show_text = cell >= 26
    labels_fit = cell >= 14 and n <= 60  # report.MAX_CONFUSION_PICTURE: past it, no picture
    margin = (max(pixel_width(c) for c in classes) + 14) if labels_fit else 10
    top = 70 + (margin if labels_fit else 0)
    legend = "rows: true class, columns: predicted; shade = share of the row"
    width = max(margin + cell * n + 20, pixel_width(title, 16) + 20, pixel_width(legend, 12) + 20)  # a few classes too
    image = Image.new("RGB", (width, top + cell * n + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black", font=font(16))
    draw.text((10, 34), legend, fill=(100, 100, 100), font=font(12))
    shares = confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
    for i in range(n):
        for j in range(n):
            x, y = margin + j * cell, top + i * cell
            share = shares[i, j].item()
            if i == j:  # right answers in blue, wrong ones in red
                color = tuple(int(255 - share * (255 - c)) for c in (40, 90, 200))
            else:
                color = tuple(int(255 - share * (255 - c)) for c in (210, 40, 40))
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=color, outline=(225, 225, 225))
            if show_text:
                draw.text((x + cell / 2, y + cell / 2), str(int(confusion[i, j])),
                          fill="white" if share > 0.55 else "black", font=font(12), anchor="mm")
    if labels_fit:
        for i, name in enumerate(classes):
            draw.text((margin - 6, top + i * cell + cell / 2), name, fill="black", font=font(), anchor="rm")
            label = Image.new("RGBA", (pixel_width(name) + 4, font().getbbox(name)[3] + 3), (255, 255, 255, 0))
            ImageDraw.Draw(label).text((0, 0), name, fill="black", font=font())
            label = label.rotate(90, expand=True)
            image.paste(label, (int(margin + i * cell + cell / 2 - 8), top - 6 - label.height), label)
    return image


def denormalize(images, mean, std) -> np.ndarray:
    """(B, 3, H, W) normalised floats -> (B, H, W, 3) uint8."""
    import torch  # here, so that split_data.py can draw its chart without loading torch
    mean = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    pixels = (images.detach().float().cpu() * std + mean).clamp(0, 1)
    return (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def image_grid(images, captions: list, mean, std, columns: int = 8) -> Image.Image:
    """A grid of (augmented, normalised) images with a caption under each."""
    return picture_grid([Image.fromarray(pixels) for pixels in denormalize(images, mean, std)], captions, columns)


def picture_grid(pictures: list, captions: list, columns: int = 8) -> Image.Image:
    """A grid of pictures of one size with a caption under each: a line of text, or a list of lines (a true class
    and the class chosen), each shortened to the picture's width (cut at 24 letters, a long true class hid the
    chosen one, and on 64 px crops the captions ran into each other)."""
    width, height = pictures[0].size
    columns = min(columns, len(pictures))
    rows = (len(pictures) + columns - 1) // columns
    captions = [[caption] if isinstance(caption, str) else list(caption) for caption in captions]
    caption_h = 4 + 14 * max(map(len, captions))
    grid = Image.new("RGB", (columns * (width + 4) + 4, rows * (height + caption_h + 4) + 4), "white")
    draw = ImageDraw.Draw(grid)
    for k, (picture, lines) in enumerate(zip(pictures, captions)):
        x = 4 + (k % columns) * (width + 4)
        y = 4 + (k // columns) * (height + caption_h + 4)
        grid.paste(picture, (x, y))
        for n, line in enumerate(lines):
            draw.text((x + width / 2, y + height + 2 + 14 * n), shortened(line, width, 12), fill="black",
                      font=font(12), anchor="ma")
    return grid


def class_distribution_chart(classes: list[str], counts: dict, title: str) -> Image.Image:
    """A bar chart of images per class, one panel per split, as a picture a person can read.

    Each panel is scaled to its own largest class, so that a class that is rare in val stands out
    as it does in train; the numbers give the counts.
    """
    small, title_font, title = font(13), font(16), one_line(title)  # a data folder's path
    classes = [shortened(name) for name in classes]
    row = max(2, min(22, 1400 // len(classes)))
    names_fit = row >= 12  # past ~100 classes the rows get too thin to label: the report has the numbers
    label_width = int(max(small.getlength(name) for name in classes)) + 16 if names_fit else 8
    panel, bar_max, top = 300, 220, 64
    image = Image.new("RGB", (max(label_width + panel * len(counts) + 10, 480), top + row * len(classes) + 34),
                      "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black", font=title_font)
    for j, name in enumerate(classes if names_fit else []):
        draw.text((label_width - 8, top + j * row + row / 2), name, fill="black", font=small, anchor="rm")
    for i, (split, per_class) in enumerate(counts.items()):
        x0, peak = label_width + i * panel, max(max(per_class), 1)
        draw.text((x0, 38), f"{split}: {sum(per_class)} images", fill=SPLIT_COLORS[split], font=small)
        for j, count in enumerate(per_class):
            y, length = top + j * row, round(bar_max * count / peak)
            if length:
                # a bar 1 px high where rows are thinner than 5 px (past 280 classes: ImageNet's 1000), not a crash
                draw.rectangle((x0, y + 2, x0 + length, y + max(row - 3, 2)), fill=SPLIT_COLORS[split])
            if names_fit:
                draw.text((x0 + length + 4, y + row / 2), str(count), fill="black", font=small, anchor="lm")
        draw.line((x0, top - 2, x0, top + row * len(classes)), fill=(120, 120, 120))
    draw.text((10, image.height - 22), "each split's bars are scaled to its largest class",
              fill=(110, 110, 110), font=small)
    return image


def to_chw(image: Image.Image) -> np.ndarray:
    """A PIL image as the (3, H, W) uint8 array TensorBoard's add_image takes."""
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


def heat_overlay(pixels, heat) -> Image.Image:
    """`pixels`, an (H, W, 3) RGB image (an array or PIL's), tinted red where `heat` (an (h, w) array over the same
    view, any scale) is high: its positive part, scaled to its maximum, stretched smoothly over the image."""
    pixels = np.asarray(pixels, dtype=np.float32)
    heat = np.maximum(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0)  # a diverged model's maps: NaN
    heat = heat / heat.max() if heat.max() > 0 else heat
    alpha = np.asarray(Image.fromarray(heat).resize(pixels.shape[1::-1], Image.BILINEAR))[..., None] * 0.6
    return Image.fromarray((pixels * (1 - alpha) + np.array([220, 30, 30]) * alpha).round().astype(np.uint8))


def heat_on_crop(image: Image.Image, heat, box) -> Image.Image:
    """`image` with heat_overlay over `box` (left, top, width, height in its pixels, data.evaluation_box): the part
    that evaluation shows the model, the map stretched over it as the part was to a square (the whole photo where
    evaluation squashes it)."""
    left, top = round(box[0]), round(box[1])
    right, bottom = max(round(box[0] + box[2]), left + 1), max(round(box[1] + box[3]), top + 1)
    image = image.copy()
    image.paste(heat_overlay(image.crop((left, top, right, bottom)), heat), (left, top))
    return image


def prediction_card(image: Image.Image, labels: list[str], probs: list[float], title: str = "",
                    photo_size: int = 320, seen: Image.Image | None = None) -> Image.Image:
    """A photo with its top-k classes beside it as a bar chart, the highest first and in blue; between them,
    `seen` (the model's input with where it saw its top class, heat_overlay) when given.

    Bars are on an absolute 0-100% scale, so a hesitant prediction looks hesitant.
    """
    small, title_font, title = font(13), font(15), one_line(title)  # a photo's path
    labels = list(map(shortened, labels))  # class names, as a class_indices.json may give any text, at most 240 px
    photo = image.convert("RGB")
    photo.thumbnail((photo_size, photo_size))
    if max(photo.size) < photo_size // 2:  # an icon: enlarged, its pixels kept sharp, to be seen at all
        scale = photo_size // 2 / max(photo.size)
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.NEAREST)
    if seen is not None:  # the model's square crop at the photo's height, or half the card's size beside a strip
        side = min(photo_size, max(photo.height, photo_size // 2))
        seen = seen.resize((side, side), Image.BILINEAR)
    extra = seen.width + 10 if seen is not None else 0
    label_width = int(max(small.getlength(label) for label in labels)) + 12
    row, bar_max, top = 26, 200, 34
    width = 10 + photo.width + extra + 20 + label_width + bar_max + 60
    height = max(photo.height, seen.height if seen is not None else 0, row * len(labels)) + top + 10
    while title_font.getlength(title) > width - 20:  # a long path: keep its end, the file name
        title = "..." + title[4:]
    card = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(card)
    draw.text((10, 8), title, fill="black", font=title_font)
    card.paste(photo, (10, top))
    if seen is not None:
        card.paste(seen, (10 + photo.width + 10, top))
    x0 = 10 + photo.width + extra + 20 + label_width
    for j, (label, prob) in enumerate(zip(labels, probs)):
        y = top + j * row
        draw.text((x0 - 8, y + row / 2), label, fill="black", font=small, anchor="rm")
        draw.rectangle((x0, y + 4, x0 + bar_max, y + row - 5), outline=(215, 215, 215))
        length = round(bar_max * min(max(prob, 0.0), 1.0))
        if length:
            draw.rectangle((x0, y + 4, x0 + length, y + row - 5),
                           fill=(40, 90, 200) if j == 0 else (150, 170, 200))
        draw.text((x0 + bar_max + 6, y + row / 2), f"{prob:.1%}", fill="black", font=small, anchor="lm")
    return card


LINE_COLORS = [(31, 119, 180), (230, 120, 20), (44, 160, 44), (150, 80, 190), (200, 40, 40)]


def legend_names(series: dict) -> list[str]:
    """The series' names, each that is drawn over an earlier one of the same points named with it ("val balanced
    = val": balanced accuracy is top-1 on a balanced split), where its line alone would be hidden."""
    names = []
    for k, (name, points) in enumerate(series.items()):
        same = next((earlier for earlier, before in list(series.items())[:k] if before == points), None)
        names.append(name if same is None else f"{name} = {same}")
    return names


def axis_ticks(values: list[float], most: float | None = None) -> list[float]:
    """Evenly spaced round values from just below the smallest of `values` to just above the largest: a y axis
    that spans the values (not from 0), so that a small late improvement stays visible. It stops at 0 for values
    that are never negative (losses, accuracies, learning rates) and at `most`, the largest value the quantity
    can take (1 for an accuracy), however near to it they come."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    spread = (high - low) or abs(high) * 0.2 or 1.0
    step = nice_step(spread / 4)
    low = math.floor((low - spread * 0.02) / step) * step
    if min(values, default=0) >= 0:
        low = max(low, 0.0)
    high = math.ceil((high + spread * 0.02) / step) * step
    if most is not None and max(values, default=most) <= most:
        high = min(high, math.ceil(most / step) * step)
    return [low + step * k for k in range(round((high - low) / step) + 1)]


def tick_labels(ticks: list, value_format: str) -> list[str]:
    """Each tick's text, with as many more decimals as it takes to tell them apart: a train and a val loss within
    0.01 of each other had every tick read 1.65."""
    def exact(label: str, tick: float) -> bool:  # the label reads as the tick's value, not a rounding of it
        percent = label.endswith("%")
        try:
            value = float(label.rstrip("%")) / (100 if percent else 1)
        except ValueError:
            return True
        return math.isclose(value, tick, rel_tol=1e-9, abs_tol=1e-12)

    for _ in range(6):
        labels = [value_format.format(tick) for tick in ticks]
        # distinct, and each the tick's own value: a step of 2.5% labelled 0%, 2%, 5%, 8% (2.5% and 7.5% rounded)
        if len(set(labels)) == len(labels) and all(exact(label, tick) for label, tick in zip(labels, ticks)):
            break
        value_format = re.sub(r"\.(\d+)", lambda digits: f".{int(digits.group(1)) + 1}", value_format, count=1)
    return labels


def line_chart(series: dict, title: str, value_format: str = "{:.2f}", width: int = 350,
               height: int = 260, most: float | None = None) -> Image.Image:
    """Lines of (epoch, value) points, one per named series, on shared axes (`axis_ticks`) with a legend."""
    series = {name: points for name, points in series.items() if points}
    epochs = [x for points in series.values() for x, _ in points]
    ticks = axis_ticks([y for points in series.values() for _, y in points], most)
    low, high = ticks[0], ticks[-1]
    first, last = (min(epochs), max(epochs)) if epochs else (0, 1)
    labels = tick_labels(ticks, value_format)
    left = max(pixel_width(label, 12) for label in labels) + 16
    top, right, bottom = 52, width - 14, height - 42
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font(15))
    x = 10
    for name, color in zip(legend_names(series), LINE_COLORS * 4):  # the legend, in one row
        draw.line((x, 38, x + 16, 38), fill=color, width=3)
        draw.text((x + 20, 38), name, fill="black", font=font(12), anchor="lm")
        x += 30 + pixel_width(name, 12)

    def to_pixel(epoch, value):
        return (left + (right - left) * ((epoch - first) / (last - first) if last > first else 0.5),
                bottom - (bottom - top) * (value - low) / (high - low))

    for tick, label in zip(ticks, labels):
        y = to_pixel(first, tick)[1]
        draw.line((left, y, right, y), fill=(232, 232, 232))
        draw.text((left - 6, y), label, fill=(90, 90, 90), font=font(12), anchor="rm")
    step = max(1, math.ceil((last - first) / 8))
    for epoch in range(math.ceil(first), math.floor(last) + 1, step):
        x = to_pixel(epoch, low)[0]
        draw.line((x, bottom, x, bottom + 4), fill=(120, 120, 120))
        draw.text((x, bottom + 6), str(epoch), fill=(90, 90, 90), font=font(12), anchor="ma")
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    draw.text(((left + right) / 2, height - 4), "epoch", fill=(90, 90, 90), font=font(12), anchor="md")
    for (name, points), color in zip(series.items(), LINE_COLORS * 4):
        pixels = [to_pixel(*point) for point in sorted(points)]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2, joint="curve")
        if len(pixels) <= 40:
            for px, py in pixels:
                draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=color)
    return image


def nice_step(rough: float) -> float:
    """The 1, 2, 2.5 or 5 times a power of ten nearest above `rough`: tick spacing a person reads at a glance."""
    power = 10 ** math.floor(math.log10(rough))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough * 0.999)


def training_curves(rows: list[dict]) -> list[Image.Image]:
    """Loss, top-1 and learning rate per epoch, from metrics.csv's rows (numbers, None where missing)."""
    def series(*columns):
        return {label: [(row["epoch"], row[column]) for row in rows if row.get(column) is not None]
                for column, label in columns}

    return [line_chart(series(("loss_train", "train"), ("loss_val", "val")), "loss"),
            line_chart(series(("acc1_train", "train"), ("acc1_val", "val"), ("balanced_acc_val", "val balanced"),
                              ("acc1_val_ema", "val EMA")), "top-1 accuracy", "{:.0%}", most=1.0),
            line_chart(series(("lr", "lr")), "learning rate (end of epoch)", "{:.1e}")]


def thumbnail(path, size: int = 128) -> Image.Image | None:
    """The image file at `path`, upright RGB, at most `size` px a side (a JPEG decoded at the
    smallest DCT scale that still gives that); None if it no longer opens or decodes."""
    try:
        image = load_rgb(path, size)
        image.thumbnail((size, size))
        return image
    except UNREADABLE:
        return None
