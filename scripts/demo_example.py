"""Wait for the demo API, then print its URL and example calls whose answers were checked.

With trained models (the demo's default) the first example uploads a consumer photo of the sample
set without any box: the detectors find its garments, and the photo printed is one where a detected
garment's top result is one of that garment's shop photos. With ``--boxes`` (the offline ImageNet
models, which do not find garments lying on a background: see docs/evaluation.md) the examples pass
the garment's annotated box instead. The script asks the running API over HTTP and prints the
answer it got.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from clothes_search.evaluation.deepfashion2 import GarmentAnnotation, ImageAnnotation, read_split
from ingestion.feed import parse_feed


def wait_ready(api: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{api}/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"the API at {api} did not become ready in {timeout_s:.0f} s")
        time.sleep(1)


def similar(api: str, params: dict[str, str]) -> dict:
    with urllib.request.urlopen(f"{api}/similar?{urllib.parse.urlencode(params)}", timeout=60) as reply:
        return json.load(reply)


def _iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--images", required=True, help="Base URL serving the sample set's folder.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--tries", type=int, default=40)
    parser.add_argument("--boxes", action="store_true", help="Query with annotated boxes (offline models).")
    args = parser.parse_args()
    split = args.data / args.split
    annotations = read_split(split)
    shop = {a.image_id: a for a in annotations if a.source == "shop"}
    image_of = {row.sku: Path(row.image_source).stem for _, row in parse_feed(split / "catalog.jsonl").rows}
    wait_ready(args.api)

    def is_match(sku: str, annotation: ImageAnnotation, item: GarmentAnnotation) -> bool:
        gallery = shop[image_of[sku]]
        return gallery.pair_id == annotation.pair_id and any(i.style == item.style for i in gallery.items)

    candidates = [(a, item) for a in annotations if a.source == "user" for item in a.items if item.style > 0]
    chosen = None
    for annotation, item in candidates[: args.tries]:
        box = ",".join(str(round(v)) for v in item.box)
        url = f"{args.images}/{args.split}/image/{annotation.image_path.name}"
        params = {"image_url": url, "k": "5"} | ({"garment": box} if args.boxes else {})
        garments = similar(args.api, params)["garments"]
        # the detected garment that is this item (IoU >= 0.5 with its annotated box)
        found = max(garments, key=lambda g: _iou(g["box"], list(item.box)), default=None)
        if (
            found is None
            or not found["results"]
            or (not args.boxes and _iou(found["box"], list(item.box)) < 0.5)
        ):
            continue
        top = found["results"][0]
        correct = is_match(top["sku"], annotation, item)
        if chosen is None or correct:
            chosen = (annotation, item, box, url, top, correct, found, len(garments))
        if correct:
            break
    if chosen is None:
        sys.exit(f"no consumer photo of {split} whose garments the detectors found")
    annotation, item, box, url, top, correct, found, detected = chosen
    expected = sorted(sku for sku in image_of if is_match(sku, annotation, item))
    photo = split / "image" / annotation.image_path.name
    print(f"\nWeb app: {args.api}/  (search by photo: drop {photo} on it)")
    print(f"clothes-search is serving {len(image_of)} catalog images at {args.api}\n")
    if args.boxes:
        print("Find the garment in a consumer photo (upload; its box from the annotations):")
        print(f"  curl -F image=@{photo} '{args.api}/similar?garment={box}&k=5'")
        print("Or by URL:")
        print(f"  curl '{args.api}/similar?image_url={url}&garment={box}&k=5'")
        print("Or let the detectors find every garment (trained models: run `make demo` without OFFLINE=1):")
        print(f"  curl '{args.api}/similar?image_url={url}&k=5'")
    else:
        print("Upload a consumer photo: the detectors find every garment in it, each with its matches:")
        print(f"  curl -F image=@{photo} '{args.api}/similar?k=5'")
        print("Or by URL:")
        print(f"  curl '{args.api}/similar?image_url={url}&k=5'")
        print("Or one garment only, by its box (x1,y1,x2,y2 pixels):")
        print(f"  curl '{args.api}/similar?image_url={url}&garment={box}&k=5'")
    verdict = "one of its shop photos" if correct else "NOT one of its shop photos (a miss)"
    how = (
        "the given box"
        if args.boxes
        else f"detected as {found['category']} (one of {detected} garments found)"
    )
    print(
        f"\nThe photo shows a {item.category.replace('_', ' ')}, {how}; its shop photos are "
        f"{', '.join(expected)}.\n"
        f"Checked just now: the top result is {top['sku']} ({top['item']['title']}), {verdict}."
    )
    database = os.environ.get("CLOTHES_SEARCH_DATABASE__URL", "")
    print(f"\nAPI: {args.api}/openapi.json (public). Items, jobs and metrics need an API key:")
    create = ".venv/bin/clothes-search keys create --name me --role admin"
    print(f"  key=$(CLOTHES_SEARCH_DATABASE__URL={database} {create})")
    print(f'  curl -H "Authorization: Bearer $key" {args.api}/items/{top["sku"]}')
    print(f"The same key signs you in to the catalog pages: {args.api}/login")


if __name__ == "__main__":
    main()
