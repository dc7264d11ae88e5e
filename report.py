"""The evaluation report: one HTML page a person opens in a browser to see what a model got wrong.

    import report
    result = evaluation.evaluate(model, loader, build_normalize(), len(classes), device, amp)
    report.write_report("runs/<name>/report.html", result, classes, checkpoint="runs/<name>/best.pth",
                        variant=model.variant, metrics_csv="runs/<name>/metrics.csv")

train.py writes it at the end of every training run (runs/<name>/report.html) and with --eval-only
(eval_<split>/report.html, beside misclassified.csv). It holds the headline figures; a per-class
table (precision, recall, F1, images) that a click on a column sorts; the confusion matrix and the
most frequent confusions; the training curves from metrics.csv; and a gallery of the misclassified
photos as thumbnails, grouped by true class, the most confident mistakes first (the likeliest
mislabelled photos), each with its top-3 predictions, a link to the original file, and a tint where the
model saw the class it chose (the evaluation's class activation maps).

The page is self-contained: pictures are embedded as data: URIs (PNG charts, small JPEG
thumbnails), the style and the few lines of script are inline, nothing is fetched. At most
`max_shown` mistakes are shown (the most confident), so a large validation set still gives a page
of a few MB that opens at once; misclassified.csv lists them all.
"""
import base64
import csv
import html
import io
import json
from datetime import datetime
from pathlib import Path

import torch

import evaluation
import plots
from data import CROP_PCT, seen_box
from images import in_threads, why_it_failed
from files import put_in_place
from utils import counted, padded, printable, text_width

MAX_SHOWN = 300  # thumbnails in the gallery, the most confident mistakes first
THUMB_SIZE = 128  # px, the longer side
TOP_K = 5  # top-5 is shown for more classes than that: of as many or fewer it is 1, whatever the model
# classes; past that the picture has no room for their names (plots.confusion_matrix_image), a grid no one can read:
# the table says it all
MAX_CONFUSION_PICTURE = 60
MAX_CONFUSION_TEXT = 30  # classes; past that report.txt's matrix is lines too wide to read (the page's list says more)
# what a report that could not be written says to do once there is room: evaluate again (a resume of a finished run
# trains nothing and writes none)
WRITE_AGAIN = "write the report again: python train.py --eval-only --resume <run>/best.pth"
# the part of a photo evaluation showed the model where the caller does not say: the central 87.5% of the shorter
# side (at 224 px, whose 256 makes it exactly that)
CENTER_CROP = seen_box(224, {"crop_mode": "center", "crop_pct": CROP_PCT})


def write_report(path, result: dict, classes: list[str], checkpoint: str, variant: str, split: str = "val",
                 metrics_csv=None, max_shown: int = MAX_SHOWN, thumb_size: int = THUMB_SIZE,
                 left_out: list = (), data: str = None, seen=CENTER_CROP, caveats: list = ()) -> Path:
    """Write the report of an `evaluation.evaluate` result to `path`; returns the path. `left_out`: (path, reason)
    of the files in the data folder left out of the run (Splits.skipped: they do not decode, or link into another
    class's folder), said under the figures; `data`: the folder evaluated, named in the headline; `seen`: (width,
    height) -> the box of a photo that the evaluation showed the model (data.seen_box), where its map is drawn;
    `caveats`: warnings about what the figures count (photos the run trained on), shown above them: the page is
    what gets shared, without the terminal's warnings."""
    path = Path(path)
    metrics = read_metrics(metrics_csv) if metrics_csv is not None and Path(metrics_csv).is_file() else []
    title = f"{variant} on {split}: {result['acc1']:.1%} top-1"
    body = [f"<h1>{escape(title)}</h1>",
            headline(result, classes, checkpoint, variant, split, left_out, data, caveats),
            class_table(result["confusion"], classes),
            confusion_section(result["confusion"], classes),
            curves_section(metrics),
            gallery(result["wrong"], classes, max_shown, thumb_size, result.get("failed", []), result.get("maps", {}),
                    seen)]
    page = PAGE.format(title=escape(title), style=STYLE, body="\n".join(body), script=SCRIPT,
                       written=f"{datetime.now():%Y-%m-%d %H:%M}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # a file name whose bytes are not UTF-8 shows them as U+FFFD (its link, the bytes percent-encoded, opens it);
    # the page replaced whole or not at all
    page = page.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    put_in_place(path, lambda tmp: tmp.write_text(page, encoding="utf-8"), then=WRITE_AGAIN)
    return path


def write_evaluation(folder, result: dict, classes: list[str], checkpoint: str, variant: str, split: str,
                     metrics_csv=None, left_out: list = (), data: str = None, seen=CENTER_CROP,
                     caveats: list = ()) -> str:
    """Everything an evaluation leaves in `folder`: report.html, misclassified.csv (every mistake),
    confusion_matrix.png and report.txt, whose text it returns (what --eval-only prints). `left_out`, `data`,
    `seen` and `caveats`: as write_report's; report.txt lists the files left out at its end, the caveats under its
    figures."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # each file whole or not at all (put_in_place): a second Ctrl-C as a run writes its report left a torn picture
    put_in_place(folder / "misclassified.csv", lambda tmp: write_misclassified_csv(tmp, result["wrong"], classes),
                 then=WRITE_AGAIN)
    picture = folder / "confusion_matrix.png"
    if len(classes) <= MAX_CONFUSION_PICTURE:
        drawn = plots.confusion_matrix_image(result["confusion"], classes, f"{split} split")
        put_in_place(picture, lambda tmp: drawn.save(tmp, format="PNG"), then=WRITE_AGAIN)
    else:  # 1000 classes drew 14030 x 14110 px, more than Pillow opens: none, and none of an earlier evaluation
        picture.unlink(missing_ok=True)
    width = max(text_width(c) for c in classes + ["class"])
    lines = [f"{variant} from {checkpoint}" + (f", on {data}" if data else ""),
             f"{split}: {counted(result['images'], 'image')}  top-1 {result['acc1']:.4f}  "
             + (f"top-5 {result['acc5']:.4f}  " if len(classes) > TOP_K else "")
             + f"balanced accuracy {result['balanced_acc']:.4f}  loss {result['loss']:.4f}",
             *[f"warning: {caveat}" for caveat in caveats], "",
             f"{'class':<{width}}  precision  recall     F1  images"]
    for (precision, recall, f1, support), name in zip(evaluation.per_class_metrics(result["confusion"]), classes):
        figures = "  ".join(f"{'n/a' if value is None else f'{value:.3f}':>{size}}"
                            for value, size in ((precision, 9), (recall, 6), (f1, 5)))
        lines.append(f"{padded(name, width)}  {figures}  {support:6d}")
    if len(classes) <= MAX_CONFUSION_TEXT:  # columns numbered as the rows: names cut to 5 letters were alike
        digits = len(str(len(classes) - 1))
        lines += ["", "confusion matrix (rows: true class, columns: predicted, numbered as the rows)",
                  f"{'':<{width + digits + 2}}  " + " ".join(f"{j:5d}" for j in range(len(classes)))]
        lines += [f"{i:>{digits}d}  {padded(name, width)}  " + " ".join(f"{int(v):5d}" for v in row)
                  for i, (name, row) in enumerate(zip(classes, result["confusion"]))]
    else:
        lines += ["", f"confusion matrix: left out for {len(classes)} classes (report.html lists the most frequent "
                      "confusions, misclassified.csv every mistake)"]
    text = "\n".join(lines)
    if left_out:  # after the text printed: train.py has warned of them as it listed the folder
        lines += ["", f"{counted(len(left_out), 'file')} in the data folder left out of the run:"]
        lines += [f"{printable(path)}: {why}" for path, why in left_out]
    if result.get("failed"):  # listed, they failed as they were evaluated: changed or removed since (why: as now)
        failed = len(result["failed"])
        lines += ["", "1 image could not be read when it was evaluated, and was left out:" if failed == 1 else
                  f"{failed} images could not be read when they were evaluated, and were left out:"]
        lines += [f"{printable(path)}: {why_it_failed(path)}" for path in result["failed"]]
    put_in_place(folder / "report.txt",
                 lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape"),
                 then=WRITE_AGAIN)
    # last: a report.html in a run folder says the run's evaluation was written whole
    write_report(folder / "report.html", result, classes, checkpoint, variant, split, metrics_csv, left_out=left_out,
                 data=data, seen=seen, caveats=caveats)
    return text


def write_misclassified_csv(path, wrong: list, classes: list[str]) -> None:
    """One row per misclassified image, by path: the true class, then the top-3 predictions with
    their probabilities (the first is the prediction)."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:  # a path's bytes as they are
        rows = csv.writer(f)
        rows.writerow(["path", "true", "predicted", "probability", "second", "second_probability",
                       "third", "third_probability"])
        for file, label, top_labels, top_probs in sorted(wrong):
            ranked = [value for k, p in zip(top_labels, top_probs) for value in (classes[k], f"{p:.4f}")]
            rows.writerow([file, classes[label], *ranked, *[""] * (6 - len(ranked))])


def write_predictions(results: list, path: Path, k: int) -> None:
    """A .json list of the --json objects, or a .csv row per image: path, then label, index, prob per rank, then
    error. An image that could not be read is there too, with no top-k and why in `error` (empty for the others).
    Whole or not at all (put_in_place): a kill while it is written leaves the file that was there, not a torn one."""
    if path.suffix.lower() == ".json":
        put_in_place(path, lambda tmp: tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8"),
                     then="classify again")
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:  # a path's bytes as they are
            rows = csv.writer(f)
            rows.writerow(["path"] + [f"{field}_{r}" for r in range(1, k + 1) for field in ("label", "index", "prob")]
                          + ["error"])
            rows.writerows([r["path"]] + ([e[f] for e in r["topk"] for f in ("label", "index", "prob")] or
                                          [""] * 3 * k) + [r.get("error", "")] for r in results)
    put_in_place(path, write, then="classify again")


def read_metrics(path) -> list[dict]:
    """metrics.csv's rows as numbers; None where a value is missing or not a number."""
    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:  # -sig: as a spreadsheet saves it
        rows = [{key: number(value) for key, value in row.items() if key is not None} for row in csv.DictReader(f)]
    return [row for row in rows if row.get("epoch") is not None]  # a row without its epoch has no place on a curve


# --- Sections ---

def headline(result: dict, classes: list[str], checkpoint: str, variant: str, split: str, left_out: list,
             data: str = None, caveats: list = ()) -> str:
    top5 = [("top-5", f"{result['acc5']:.1%}")] if len(classes) > TOP_K else []
    figures = [("top-1", f"{result['acc1']:.1%}"), *top5,
               ("balanced accuracy", f"{result['balanced_acc']:.1%}"), ("images", f"{result['images']:,}"),
               ("mistakes", f"{len(result['wrong']):,}"), ("classes", f"{len(classes):,}"),
               ("loss", f"{result['loss']:.4f}")]
    cards = "".join(f'<div class="card"><span>{escape(name)}</span><b>{escape(value)}</b></div>'
                    for name, value in figures)
    about = " · ".join(f'{name} <b class="{name}">{isolated(value)}</b>'
                       for name, value in (("variant", variant), ("checkpoint", checkpoint), ("data", data),
                                           ("split", split)) if value)
    unread = ""
    if left_out:
        first = f'{isolated(left_out[0][0])}: {escape(left_out[0][1])}'  # as report.txt; a reason may end in ")"
        unread = (f'<p class="note">1 file in the data folder was left out of the run, {first}.</p>'
                  if len(left_out) == 1 else f'<p class="note">{len(left_out):,} files in the data folder were left '
                                             f'out of the run, such as {first}; report.txt lists them all.</p>')
    warnings = "".join(f'<p class="caveat">Warning: {escape(caveat)}</p>' for caveat in caveats)
    return (f'<section id="summary"><p class="about">{about}</p>{warnings}<div class="cards">{cards}</div>'
            '<p class="note">Balanced accuracy is the mean of the per-class recalls: top-1 as if every '
            f'class had as many images.</p>{unread}</section>')


def class_table(confusion, classes: list[str]) -> str:
    """Precision, recall, F1, images and the class most often predicted instead, one row a class."""
    rows = []
    for i, (name, (precision, recall, f1, support)) in enumerate(zip(classes, evaluation.per_class_metrics(confusion))):
        errors = confusion[i].clone()
        errors[i] = 0
        worst = int(errors.argmax())
        instead = f"{isolated(classes[worst])} ({int(errors[worst])})" if errors[worst] > 0 else ""
        rows.append(f'<tr><td>{isolated(name)}</td>{number_cell(precision)}{number_cell(recall)}{number_cell(f1)}'
                    f'<td data-value="{support}">{support}</td><td data-value="{int(errors.sum())}">'
                    f'{int(errors.sum())}</td><td>{instead}</td></tr>')
    header = "".join(f'<th data-type="{kind}" title="sort by {name}">{name}</th>' for name, kind in (
        ("class", "text"), ("precision", "number"), ("recall", "number"), ("F1", "number"),
        ("images", "number"), ("mistakes", "number"), ("most often taken for", "text")))
    return (f'<section id="classes"><h2>Per class</h2><p class="note">Click a column to sort by it '
            f'(again to reverse). Recall: the share of the class\'s images recognised; precision: the share '
            f'of the predictions of the class that were right.</p><table class="sortable"><thead><tr>{header}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def number_cell(value: float) -> str:
    """A figure, or n/a where there is none (sorted below every figure): see evaluation.per_class_metrics."""
    if value is None:
        return '<td data-value="" title="no image of the class, or no prediction of it, to measure">n/a</td>'
    return f'<td data-value="{value:.6f}">{value:.3f}</td>'


def confusion_section(confusion, classes: list[str]) -> str:
    n = len(classes)
    errors = confusion.clone()
    errors.fill_diagonal_(0)
    counts, cells = torch.sort(errors.flatten(), descending=True, stable=True)  # ties in class order
    top = [(count, cell // n, cell % n) for count, cell in zip(counts[:10].tolist(), cells[:10].tolist()) if count]
    items = "".join(f"<li>{isolated(classes[i])} taken for {isolated(classes[j])}: {count} "
                    f"({count / max(int(confusion[i].sum()), 1):.0%} of {isolated(classes[i])})</li>"
                    for count, i, j in top)
    listing = f"<div><p>Most frequent confusions:</p><ol>{items}</ol></div>" if items else "<p>No confusions.</p>"
    if n > MAX_CONFUSION_PICTURE:
        picture = f'<p class="note">The picture is left out for {n} classes; the table above has the figures.</p>'
    else:
        image = plots.confusion_matrix_image(confusion, classes, "confusion matrix")
        picture = f'<img class="picture" src="{data_uri(image, "PNG")}" alt="confusion matrix">'
    return f'<section id="confusion"><h2>Confusion matrix</h2><div class="side">{picture}{listing}</div></section>'


def curves_section(metrics: list[dict]) -> str:
    if not metrics:
        return ('<section id="curves"><h2>Training curves</h2><p class="note">No metrics.csv beside the '
                'checkpoint.</p></section>')
    charts = "".join(f'<img class="picture" src="{data_uri(chart, "PNG")}" alt="training curve">'
                     for chart in plots.training_curves(metrics))
    return f'<section id="curves"><h2>Training curves</h2><div class="curves">{charts}</div></section>'


def gallery(wrong: list, classes: list[str], max_shown: int, thumb_size: int, failed: list, maps: dict,
            seen=CENTER_CROP) -> str:
    """At most `max_shown` mistakes (shown_mistakes: each class's most confident, then the most confident of all),
    grouped by true class in class order, each group most confident first; each tinted where the model saw the class it chose, where `maps` has its map, over the part
    of the photo it was shown (`seen`, write_report's)."""
    shown, each = shown_mistakes(wrong, max_shown)

    def picture(mistake):
        image = plots.thumbnail(mistake[0], thumb_size)
        heat = maps.get(mistake[0])
        # the thumbnail is the photo scaled: the box evaluation took of the photo, at the thumbnail's size
        return image if image is None or heat is None else plots.heat_on_crop(image, heat, seen(*image.size))
    thumbnails = dict(zip([m[0] for m in shown], in_threads(picture, shown)))
    per_class = [0] * len(classes)
    for _, label, _, _ in wrong:
        per_class[label] += 1
    intro = ("No image was misclassified." if not wrong else
             f"{counted(len(wrong), 'misclassified image')}, grouped by true class; in each group "
             "the most confident "
             "mistakes come first: a photo the model is sure about and still gets wrong is often mislabelled. "
             "A click on a photo opens the original file.")
    if maps:
        intro += (" Each photo is tinted red where, in the part the model was shown, it saw the class it chose "
                  "(its class activation map): a tint on the background rather than the subject is worth a look.")
    if len(wrong) > len(shown):
        intro += (f" Shown: {len(shown):,}, the most confident {counted(each, 'mistake')} of each class, then the "
                  f"most confident of all; the other {len(wrong) - len(shown):,} "
                  f"{'is' if len(wrong) - len(shown) == 1 else 'are'} listed in misclassified.csv beside this page.")
    if failed:
        intro += (f" 1 image failed to load and was not evaluated, {failed[0]}: report.txt says why."
                  if len(failed) == 1 else f" {len(failed)} images failed to load and were not evaluated, such as "
                  f"{failed[0]}: report.txt lists them all, with why.")
    groups, links = [], []
    for label, name in enumerate(classes):
        mistakes = [m for m in shown if m[1] == label]
        if not mistakes:
            if per_class[label]:  # more classes with mistakes than the page shows: named all the same
                links.append(f"{isolated(name)} (none of {per_class[label]} shown)")
            continue
        count = f"{len(mistakes)} of {per_class[label]}" if len(mistakes) < per_class[label] else str(per_class[label])
        links.append(f'<a href="#wrong-{label}">{isolated(name)} ({count})</a>')
        figures = "".join(mistake_figure(m, classes, thumbnails[m[0]]) for m in mistakes)
        noun = "mistake" if per_class[label] == 1 else "mistakes"
        groups.append(f'<div class="group"><h3 id="wrong-{label}">{isolated(name)} <small>({count} {noun})</small></h3>'
                      f'<div class="gallery">{figures}</div></div>')
    nav = f'<p class="groups">{" · ".join(links)}</p>' if links else ""
    return (f'<section id="mistakes"><h2>Misclassified photos</h2><p>{escape(intro)}</p>{nav}'
            f'<div class="groups-flow">{"".join(groups)}</div></section>')


def shown_mistakes(wrong: list, max_shown: int) -> tuple:
    """(the mistakes the gallery shows, most confident first, and how many of each class at least): each class's most
    confident ones (half the room shared among the classes), then the most confident of all. Ranked by confidence
    alone, a class the model never gets right, whose mistakes are unsure, left the page without a word."""
    ranked = sorted(wrong, key=lambda mistake: (-mistake[3][0], mistake[0]))
    classes = {mistake[1] for mistake in ranked}
    each = max(1, max_shown // (2 * len(classes))) if classes else 0
    taken, first = {}, []
    for k, mistake in enumerate(ranked):
        if taken.get(mistake[1], 0) < each:
            taken[mistake[1]] = taken.get(mistake[1], 0) + 1
            first.append(k)
    first = set(first[:max_shown])  # more classes than room: the firsts of the classes of the most confident ones
    rest = [k for k in range(len(ranked)) if k not in first][:max_shown - len(first)]
    return [ranked[k] for k in sorted([*first, *rest])], each


def mistake_figure(mistake, classes: list[str], image) -> str:
    file, label, top_labels, top_probs = mistake
    ranked = "".join(f'<li{" class=truth" if k == label else ""}>{isolated(classes[k])} {p:.1%}</li>'
                     for k, p in zip(top_labels, top_probs))
    if image is None:
        picture = '<span class="missing">the file no longer opens</span>'
    else:
        picture = (f'<img src="{data_uri(image, "JPEG")}" width="{image.width}" height="{image.height}" '
                   f'alt="{escape(classes[label])} photo taken for {escape(classes[top_labels[0]])}">')
    return (f'<figure><a href="{escape(Path(file).resolve().as_uri())}" title="{escape(str(file))}">{picture}</a>'
            f'<figcaption>true: <b>{isolated(classes[label])}</b><ol>{ranked}</ol>'
            f'<span class="file">{isolated(Path(file).name)}</span></figcaption></figure>')


# --- Page ---

def data_uri(image, kind: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": 82} if kind == "JPEG" else {"optimize": True}))
    return f"data:image/{kind.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def isolated(text: str) -> str:
    """A name (a class's, a file's) in running text, its direction its own: a right-to-left mark in one reversed the
    text after it ("café taken for evil" read backwards)."""
    return f"<bdi>{escape(text)}</bdi>"


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
{body}
<p class="note">Written by train.py on {written}. Everything is in this file: it opens without a network.</p>
</main>
<script>{script}</script>
</body>
</html>
"""

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #f7f7f8; }
main { max-width: 1120px; margin: 0 auto; padding: 12px 20px 40px; }
h1 { font-size: 1.45em; margin: 0.4em 0 0.6em; overflow-wrap: anywhere; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; overflow-wrap: anywhere; }
.note { color: #666; font-size: 0.9em; }
.caveat { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.4em 0.7em; }
.about { overflow-wrap: anywhere; }
bdi { white-space: pre-wrap; }  /* a name's spaces as they are: "rose" and "rose " told apart, as in report.txt */
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 8px; }
.card { background: #fff; border: 1px solid #e2e2e6; border-radius: 6px; padding: 6px 10px; overflow-wrap: anywhere; }
.card span { color: #666; font-size: 0.85em; display: block; }
.card b { font-size: 1.15em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; overflow-wrap: anywhere; }
th { background: #eef0f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
img.picture { max-width: 100%; height: auto; border: 1px solid #e2e2e6; background: #fff; }
.side { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; overflow-wrap: anywhere; }
.side > div { min-width: 0; }
.curves { display: flex; flex-wrap: wrap; gap: 8px; }
.curves img.picture { flex: 0 1 auto; min-width: 0; }
.groups { line-height: 1.8; overflow-wrap: anywhere; }
/* groups side by side, each as wide as its photos (a class with one mistake takes one photo's width, not a row),
   a large one the whole width, its photos wrapping */
.groups-flow { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.group { flex: 0 1 auto; max-width: 100%; min-width: 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { width: 150px; box-sizing: border-box; }
figure { margin: 0; background: #fff; border: 1px solid #e2e2e6; border-radius: 6px; padding: 6px;
         font-size: 0.85em; overflow-wrap: anywhere; }
figure img { display: block; margin: 0 auto 4px; max-width: 100%; height: auto; }
figure ol { margin: 0.2em 0; padding-left: 1.5em; }
figure li:first-child { color: #b42318; }
figure li.truth { color: #1a7f37; font-weight: bold; }
.file, .missing { color: #777; }
"""

# Sorting the per-class table: numbers by their data-value, names as a person orders them (case and accents aside,
# class 9 before class 10); a second click reverses; n/a (an empty data-value) stays below the figures either way.
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((header, column) => {
  header.addEventListener("click", () => {
    const table = header.closest("table"), numeric = header.dataset.type === "number";
    const descending = header.getAttribute("aria-sort") ? header.getAttribute("aria-sort") === "ascending" : numeric;
    table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    const cell = row => row.cells[column], none = row => numeric && cell(row).dataset.value === "";
    const order = numeric ? (a, b) => Number(cell(a).dataset.value) - Number(cell(b).dataset.value)
      : (a, b) => cell(a).textContent.localeCompare(cell(b).textContent, undefined,
                                                    {numeric: true, sensitivity: "base"});
    const rows = Array.from(table.tBodies[0].rows), sorted = rows.filter(row => !none(row)).sort(order);
    table.tBodies[0].append(...(descending ? sorted.reverse() : sorted), ...rows.filter(none));
  });
});
"""
