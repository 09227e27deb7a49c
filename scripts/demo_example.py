"""Wait for the demo API, then print its URL and two example calls whose answers were checked.

The examples query a consumer photo of the sample set with the garment's annotated box (the
offline detectors do not find garments lying on a background: see docs/evaluation.md). This
script asks the running API over HTTP, and prints the first example whose top result is one of
that garment's shop photos, with the answer it got.
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

from clothes_search.evaluation.deepfashion2 import read_split
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--images", required=True, help="Base URL serving the sample set's folder.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--tries", type=int, default=40)
    args = parser.parse_args()
    split = args.data / args.split
    annotations = read_split(split)
    shop = {a.image_id: a for a in annotations if a.source == "shop"}
    image_of = {row.sku: Path(row.image_source).stem for _, row in parse_feed(split / "catalog.jsonl").rows}
    wait_ready(args.api)
    candidates = [(a, item) for a in annotations if a.source == "user" for item in a.items if item.style > 0]
    chosen = None
    for annotation, item in candidates[: args.tries]:
        box = ",".join(str(round(v)) for v in item.box)
        url = f"{args.images}/{args.split}/image/{annotation.image_path.name}"
        body = similar(args.api, {"image_url": url, "garment": box, "k": "5"})
        top = body["garments"][0]["results"][0]
        gallery = shop[image_of[top["sku"]]]
        correct = gallery.pair_id == annotation.pair_id and any(i.style == item.style for i in gallery.items)
        chosen = chosen or (annotation, item, box, url, top, correct)
        if correct:
            chosen = (annotation, item, box, url, top, correct)
            break
    if chosen is None:
        sys.exit(f"no consumer photo with a catalog garment in {split}")
    annotation, item, box, url, top, correct = chosen
    expected = sorted(
        sku for sku, image in image_of.items()
        if shop[image].pair_id == annotation.pair_id and any(i.style == item.style for i in shop[image].items)
    )  # fmt: skip
    photo = split / "image" / annotation.image_path.name
    print(f"\nWeb app: {args.api}/  (search by photo: drop {photo} on it)")
    print(f"clothes-search is serving {len(image_of)} catalog images at {args.api}\n")
    print("Find the garment in a consumer photo (by URL; its box from the annotations):")
    print(f"  curl '{args.api}/similar?image_url={url}&garment={box}&k=5'")
    print("Or upload the photo:")
    print(f"  curl -F image=@{photo} '{args.api}/similar?garment={box}&k=5'")
    print("Or let the detectors find every garment (trained models: `make models`):")
    print(f"  curl '{args.api}/similar?image_url={url}&k=5'")
    verdict = "one of its shop photos" if correct else "NOT one of its shop photos (a miss)"
    print(
        f"\nThe photo shows a {item.category.replace('_', ' ')}; its shop photos are {', '.join(expected)}.\n"
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
