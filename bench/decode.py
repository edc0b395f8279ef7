"""Decode once versus decode every epoch: images per second, both measured in the same run.

Baseline: what a plain PyTorch ``Dataset`` over PNG files does, Pillow-decoding and resizing every
image in every epoch. medaudit: build the decode-once cache (decode + resize + write a memory-mapped
uint8 array), then read every epoch from it. Both sides use the same number of processes
(``--workers``). The images are synthetic 1024x1024 8-bit radiograph-like PNGs (smooth anatomy plus
noise, so they compress like real films rather than like pure noise).

    python bench/decode.py              # 200 images, quick (CI)
    python bench/decode.py --full       # 1,000 images, the full size
    python bench/decode.py --count 3000 --epochs 5 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from audit.data.loading import DataRequest, load_cohort

SIDE = 1024


def anatomy() -> np.ndarray:
    """Bright body, darker lungs, a vertical gradient: the part every synthetic film shares."""
    y, x = np.mgrid[-1 : 1 : SIDE * 1j, -1 : 1 : SIDE * 1j]
    body = np.exp(-(((x / 0.8) ** 2 + (y / 0.95) ** 2) ** 3))
    lungs = sum(
        np.exp(-((((x - cx) / 0.28) ** 2 + ((y + 0.05) / 0.5) ** 2) ** 2)) for cx in (-0.35, 0.4)
    )
    return (40 + 170 * body - 90 * lungs + 25 * y).astype(np.float32)


def synthetic_film(base: np.ndarray, seed: int) -> np.ndarray:
    """One 1024x1024 radiograph-like image: the anatomy, shifted a little, plus film noise."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(base, tuple(rng.integers(-20, 21, 2)), axis=(0, 1))
    noise = rng.standard_normal((SIDE, SIDE), dtype=np.float32) * 6
    return np.clip(shifted + noise + rng.normal(0, 10), 0, 255).astype(np.uint8)


def make_images(folder: Path, count: int) -> Path:
    rows = []
    base = anatomy()
    for i in range(count):
        name = f"img{i:05d}.png"
        Image.fromarray(synthetic_film(base, i)).save(folder / name)
        rows.append({"path": name, "label": str(i % 2), "patient_id": f"P{i // 3}"})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def pil_decode(paths: list[str], size: int) -> int:
    """What a PNG Dataset's ``__getitem__`` does for each image; returns a checksum."""
    total = 0
    for path in paths:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR))
        total += int(array[0, 0])
    return total


def baseline_epoch(paths: list[str], size: int, workers: int) -> None:
    if workers == 1:
        pil_decode(paths, size)
        return
    chunks = [paths[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(pil_decode, chunks, [size] * workers))


def cached_epoch(images: np.ndarray, batch: int = 256) -> None:
    """What training from the cache does: read every image once per epoch (in batches)."""
    checksum = 0
    for start in range(0, len(images), batch):
        checksum += int(np.ascontiguousarray(images[start : start + batch])[:, 0, 0].sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="synthetic PNGs (default 200)")
    parser.add_argument("--full", action="store_true", help="1,000 images (the full size)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs read (default 3)")
    parser.add_argument("--size", type=int, default=256, help="decoded side (default 256)")
    parser.add_argument("--workers", type=int, default=1, help="processes for both sides")
    args = parser.parse_args(argv)
    count = max(args.count, 1000) if args.full else args.count
    folder = Path(tempfile.mkdtemp(prefix="medaudit-bench-"))
    try:
        run(folder, count, args.epochs, args.size, args.workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, count: int, epochs: int, size: int, workers: int) -> None:
    print(f"making {count} synthetic {SIDE}x{SIDE} PNGs ...", flush=True)
    manifest = make_images(folder, count)
    paths = sorted(str(p) for p in folder.glob("*.png"))
    request = DataRequest(
        manifest, "cxr", cache_dir=folder / "cache", image_size=size, workers=workers
    )

    start = time.perf_counter()
    for _ in range(epochs):
        baseline_epoch(paths, size, workers)
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    cohort = load_cohort(request, progress=False)
    build = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(epochs):
        cached_epoch(cohort.images)
    reads = time.perf_counter() - start
    start = time.perf_counter()
    again = load_cohort(request, progress=False)
    for _ in range(epochs):
        cached_epoch(again.images)
    rerun = time.perf_counter() - start

    served = count * epochs
    print(f"images: {count}, epochs: {epochs}, decoded side: {size}, workers: {workers}")
    print(f"PIL decode every epoch : {served / baseline:10.1f} images/s ({baseline:.2f} s)")
    print(f"cache build (once)     : {count / build:10.1f} images/s ({build:.2f} s)")
    print(f"epochs from the cache  : {served / reads:10.1f} images/s ({reads:.3f} s)")
    print(f"ratio, first audit (build + {epochs} epochs vs PIL): {baseline / (build + reads):.1f}x")
    print(f"ratio, next audit (cache hit + {epochs} epochs vs PIL): {baseline / rerun:.1f}x")


if __name__ == "__main__":
    main()
