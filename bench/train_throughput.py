"""Fine-tuning throughput: medaudit's data path against a PNG Dataset and DataLoader, in one run.

Baseline, written as users write it: a torch ``Dataset`` whose ``__getitem__`` opens the 1024x1024
PNG with Pillow, resizes it to the cache side, applies the confounder (the same function, to one
image), then torchvision ``Resize`` to the input size, ``RandomAffine`` (degrees 10, translate 0.1,
scale 0.9-1.1, shear 0.1 deg, bilinear), ``Grayscale(3)``, ``ToTensor`` and ``Normalize``; a
``DataLoader`` with ``num_workers=2``. medaudit: decode once into the uint8 cache
(``load_cohort``), confound once, resize once to the input size and keep uint8 on the device
(``to_set_tensors``); per batch ``normalise`` and one batched ``random_affine``, and the engine's
own training step (``audit.train.engine.train_epoch``).

Both sides get the same model, optimizer, batch size, torch thread count and timed steps, bf16
autocast and channels_last on CUDA. Printed: (a) the data path alone, images made ready on the
device per second (no model): ``data-path ratio``; (b) fine-tuning images per second:
``end-to-end ratio``. medaudit's one-time work (decode once per audit, confound and resize once
per cell) is timed and printed apart, with the ratios it would give if this run alone paid for it.

    python bench/train_throughput.py                    # CPU: 128 images, resnet18 at 64 px
    python bench/train_throughput.py --device cuda --model resnet50 --input-size 224 \
        --batch-size 256 --images 512 --steps 30

Intentional differences (see bench/README.md): the baseline confounds at the cache side, as
medaudit does, not at 1024 px (cheaper for it, and the pixels then match); the resize to the input
size is Pillow's bilinear filter in the baseline and torch's antialiased bilinear in medaudit (at
most one grey level apart); the augmentations draw from the same ranges but differ in detail
(torchvision fills with black, one zoom factor; medaudit replicates the border, zooms x and y
independently).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms as T

from audit.confounders import Confounder, apply_confounder, get_confounder
from audit.data.cases import Cohort
from audit.data.loading import DataRequest, load_cohort
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.models.architectures import create_backbone
from audit.plan.grid import RunSpec
from audit.resolve.settings import TrainSettings
from audit.train.augment import random_affine
from audit.train.device import autocast, set_determinism
from audit.train.engine import Classifier, batch_indices, train_epoch
from audit.train.tensors import IMAGENET_MEAN, IMAGENET_STD, SetTensors, normalise, to_set_tensors

SIDE = 1024
PIXEL_CONFOUNDERS = ("tag", "denoise", "noise")
BILINEAR = T.InterpolationMode.BILINEAR


# --- the images ----------------------------------------------------------------------------------


def make_pngs(folder: Path, count: int, seed: int = 0, jobs: int = 1) -> Path:
    """``count`` synthetic 1024x1024 8-bit PNGs and their manifest CSV (returned).

    Phantom radiographs are rendered at 256 px (1024 px costs about a second each), scaled up and
    given film grain, so the files are as large and as slow to decode as real films.
    """
    phantoms = make_phantom_cohort(
        PhantomSettings(n_patients=max(2, count), images_per_patient=(1, 1), image_size=256,
                        seed=seed)
    )  # fmt: skip
    names = [f"img{i:05d}.png" for i in range(count)]
    work = [
        (str(folder / n), phantoms.images[i], seed * 1_000_003 + i) for i, n in enumerate(names)
    ]
    if jobs > 1 and count >= 64:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_film, work, chunksize=8))
    else:
        for job in work:
            _write_film(job)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "sex"])
        for i, name in enumerate(names):
            case = phantoms.cases[i]
            writer.writerow([name, case.label, case.patient_key, case.sex])
    return manifest


def _write_film(job: tuple[str, np.ndarray, int]) -> None:
    path, small, seed = job
    big = Image.fromarray(small).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(seed).integers(-6, 7, (SIDE, SIDE), dtype=np.int16)
    film = np.clip(np.asarray(big, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(film).save(path)


@dataclass(frozen=True, eq=False)
class Workload:
    """What both data paths are asked for: the same files, labels, confounder and sizes."""

    paths: tuple[str, ...]
    labels: np.ndarray
    confounded: np.ndarray
    confounder: Confounder
    params: Mapping[str, Any]
    seed: int
    cache_size: int
    input_size: int


def workload(manifest: Path, confounder: str, cache_size: int, input_size: int) -> Workload:
    """The manifest's images; the confounder marks every positive (correlation level 1)."""
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    conf = get_confounder(confounder)
    return Workload(
        paths=tuple(str(manifest.parent / r["path"]) for r in rows),
        labels=labels,
        confounded=labels == 1,
        confounder=conf,
        params=conf.resolve_params({}),
        seed=7,
        cache_size=cache_size,
        input_size=input_size,
    )


# --- medaudit's data path ------------------------------------------------------------------------


def decode_once(manifest: Path, cache_dir: Path, cache_size: int) -> np.ndarray:
    """The decode-once cache, built as ``medaudit check --data`` builds it: (N, S, S) uint8."""
    request = DataRequest(manifest, "cxr", cache_dir=cache_dir, image_size=cache_size)
    return load_cohort_as_cli(request).images


def load_cohort_as_cli(request: DataRequest) -> Cohort:
    """``load_cohort`` with its decode workers started as under ``medaudit check``.

    From 64 images on, the cache decodes in spawned processes, and a spawned process first
    re-imports the main script: under the ``medaudit`` command that is a few light modules, for
    this script torch and torchvision (seconds per worker on 2 cores, which would be charged to
    medaudit). The script's file is hidden from multiprocessing while the cohort loads.
    """
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        return load_cohort(request, progress=False)
    finally:
        if path is not None:
            main.__file__ = path


def our_set(images: np.ndarray, work: Workload, device: torch.device) -> SetTensors:
    """Confound once, resize once to the input size, uint8 on the device: what a cell holds."""
    confounded = apply_confounder(
        work.confounder, images, work.confounded, seed=work.seed, params=work.params,
        ids=np.arange(len(images)),
    )  # fmt: skip
    ids = tuple(str(i) for i in range(len(images)))
    return to_set_tensors(confounded, work.labels, ids, work.input_size, device)


def our_batch(
    data: SetTensors, idx: torch.Tensor, settings: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    """One training batch as the engine makes it: normalise, then one batched affine warp."""
    x = normalise(data.images[idx], settings.normalize)
    return random_affine(x, settings, generator) if settings.augment else x


# --- the baseline --------------------------------------------------------------------------------


class PngDataset(Dataset):
    """The baseline: every item opened from its PNG, confounded and transformed, every time."""

    def __init__(self, work: Workload, augment: bool) -> None:
        self.work = work
        size = work.input_size
        steps: list[Callable] = [T.Resize((size, size), interpolation=BILINEAR, antialias=True)]
        if augment:
            steps.append(
                T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=0.1,
                               interpolation=BILINEAR)
            )  # fmt: skip
        steps += [T.Grayscale(3), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.transform = T.Compose(steps)

    def __len__(self) -> int:
        return len(self.work.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.work
        with Image.open(w.paths[i]) as img:  # the same Pillow call as audit/data/decode.py
            gray = img.convert("L").resize(
                (w.cache_size, w.cache_size), Image.Resampling.BILINEAR, reducing_gap=3.0
            )
        pixels = apply_confounder(
            w.confounder, np.asarray(gray)[None], w.confounded[i : i + 1], seed=w.seed,
            params=w.params, ids=[i],
        )[0]  # fmt: skip
        return self.transform(Image.fromarray(pixels)), torch.tensor(float(w.labels[i]))


def baseline_loader(
    work: Workload, batch_size: int, batches: int, workers: int, device: torch.device
) -> DataLoader:
    """Shuffled epochs, drawn by one sampler so the workers start once, not once per epoch."""
    dataset = PngDataset(work, augment=True)
    sampler = RandomSampler(
        dataset, num_samples=batch_size * batches, generator=torch.Generator().manual_seed(0)
    )
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", drop_last=True,
    )  # fmt: skip


def baseline_train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> None:
    """The engine's step on a loader's batch: same autocast, memory format, loss and optimizer."""
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = y.to(device, non_blocking=True)
    with autocast(device):
        logits = model(x).float()
    loss = F.binary_cross_entropy_with_logits(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# --- timing --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(step: Callable[[], int], steps: int, device: torch.device) -> float:
    """Run ``step`` (which returns the images it handled) ``steps`` times; images per second."""
    _sync(device)
    began = time.perf_counter()
    images = sum(step() for _ in range(steps))
    _sync(device)
    return images / (time.perf_counter() - began)


def new_model(arch: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The engine's classifier (backbone, Dropout, one-logit head), seeded: both sides get it."""
    torch.manual_seed(0)
    model = Classifier(create_backbone(arch), TrainSettings().dropout).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    return model, torch.optim.Adam(model.parameters(), lr=TrainSettings().lr)


def warm_up(model, optimizer, args: argparse.Namespace, device: torch.device) -> None:
    """A few steps on random inputs of the timed shape (allocator, cuDNN autotuning)."""
    size = args.input_size
    for _ in range(args.warmup):
        x = torch.randn(args.batch_size, 3, size, size, device=device)
        y = torch.randint(0, 2, (args.batch_size,), device=device).float()
        baseline_train_step(model, optimizer, x, y, device)
    _sync(device)


@dataclass(frozen=True)
class Rates:
    baseline: float
    ours: float


def measure_data_path(work, data, args, device) -> Rates:
    """Images made ready on the device per second, no model; the baseline's clock includes its
    workers' start (users pay it every epoch unless they keep the workers)."""
    loader = baseline_loader(work, args.batch_size, args.steps, args.workers, device)
    batches = iter(loader)

    def baseline_step() -> int:
        x, _ = next(batches)
        x.to(device, non_blocking=True)
        return len(x)

    baseline = images_per_second(baseline_step, args.steps, device)
    settings = TrainSettings(batch_size=args.batch_size, normalize="imagenet")
    order = torch.Generator().manual_seed(0)
    aug = torch.Generator(device=device).manual_seed(1)

    def our_step() -> int:
        idx = batch_indices(len(data), args.batch_size, order)[0].to(device)
        our_batch(data, idx, settings, aug)
        return len(idx)

    our_step()  # first call: kernel start-up on a GPU
    return Rates(baseline, images_per_second(our_step, args.steps, device))


def measure_end_to_end(work, data, args, device) -> Rates:
    """Fine-tuning images per second; each side warms a fresh copy of the same model first."""
    return Rates(_baseline_end_to_end(work, args, device), _our_end_to_end(data, args, device))


def _baseline_end_to_end(work: Workload, args: argparse.Namespace, device: torch.device) -> float:
    model, optimizer = new_model(args.model, device)
    warm_up(model, optimizer, args, device)
    batches = iter(baseline_loader(work, args.batch_size, args.steps, args.workers, device))

    def step() -> int:
        x, y = next(batches)
        baseline_train_step(model, optimizer, x, y, device)
        return len(x)

    return images_per_second(step, args.steps, device)


def _our_end_to_end(data: SetTensors, args: argparse.Namespace, device: torch.device) -> float:
    model, optimizer = new_model(args.model, device)
    warm_up(model, optimizer, args, device)
    settings = TrainSettings(
        batch_size=args.batch_size, input_size=args.input_size, normalize="imagenet",
        max_steps_per_epoch=1,
    )  # fmt: skip
    spec = RunSpec(
        role="user", model_hash="bench", arch=args.model, data_hash="bench", split_hash="bench",
        confounder="bench", params=(), level=1.0, fold=0, seed=0, train=settings,
    )  # fmt: skip
    order = torch.Generator().manual_seed(0)
    aug = torch.Generator(device=device).manual_seed(1)
    per_step = min(args.batch_size, len(data))

    def step() -> int:  # one engine epoch cut to one step: the engine's own code path
        train_epoch(model, optimizer, data, spec, order, aug, device)
        return per_step

    return images_per_second(step, args.steps, device)


# --- the run -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    add = parser.add_argument
    add("--images", type=int, default=128, help="synthetic 1024x1024 PNGs (default 128)")
    add("--device", default=default_device, help=f"torch device (default {default_device})")
    add("--model", default="resnet18", choices=("resnet18", "resnet50"), help="default resnet18")
    add("--input-size", type=int, default=64, help="model input side in px (default 64)")
    add("--cache-size", type=int, default=256, help="decoded cache side in px (default 256)")
    add("--batch-size", type=int, default=64, help="default 64")
    add("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    add("--repeats", type=int, default=1, help="measure N times, keep each side's best (1)")
    add("--warmup", type=int, default=2, help="untimed model warm-up steps (default 2)")
    add("--workers", type=int, default=2, help="baseline DataLoader workers (default 2)")
    add("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    add("--confounder", default="tag", choices=PIXEL_CONFOUNDERS, help="default tag")
    add("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="processes making PNGs")
    args = parser.parse_args(argv)
    if args.images < 2 or args.batch_size < 2 or min(args.steps, args.repeats) < 1:
        parser.error("--images and --batch-size must be at least 2, --steps and --repeats 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_determinism(False)  # as run_audit does without --deterministic: cuDNN autotuning on
    device = torch.device(args.device)
    folder = Path(tempfile.mkdtemp(prefix="medaudit-bench-"))
    try:
        run(args, device, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, device: torch.device, folder: Path) -> None:
    print(f"making {args.images} synthetic {SIDE}x{SIDE} PNGs ...", flush=True)
    manifest = make_pngs(folder, args.images, jobs=args.jobs)
    work = workload(manifest, args.confounder, args.cache_size, args.input_size)
    began = time.perf_counter()
    images = decode_once(manifest, folder / "cache", args.cache_size)
    decoded = time.perf_counter()
    data = our_set(images, work, device)
    _sync(device)
    one_time = (decoded - began, time.perf_counter() - decoded)

    paths, e2es = [], []
    for _ in range(args.repeats):  # each repeat starts fresh loaders: no batch carried over
        paths.append(measure_data_path(work, data, args, device))
        e2es.append(measure_end_to_end(work, data, args, device))
    report(args, device, one_time, best(paths), best(e2es))


def best(rates: list[Rates]) -> Rates:
    """Each side's best repeat: a busy machine only ever slows a measurement down."""
    return Rates(max(r.baseline for r in rates), max(r.ours for r in rates))


def report(args, device, one_time: tuple[float, float], path: Rates, e2e: Rates) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    served = args.steps * min(args.batch_size, args.images)
    total_one_time = sum(one_time)
    print(
        f"{args.model} at {args.input_size} px, batch {args.batch_size}, {args.steps} timed steps "
        f"(best of {args.repeats}), "
        f"{args.images} PNGs decoded to {args.cache_size} px, confounder {args.confounder}; "
        f"{device.type} ({name}), {args.threads} torch threads, {args.workers} DataLoader workers, "
        f"torch {torch.__version__}"
    )
    print(
        f"medaudit one-time work: decode into the cache {one_time[0]:.2f} s (once per audit), "
        f"confound + resize + to the device {one_time[1]:.2f} s (once per cell)"
    )
    print("(a) data path only, images made ready per second (no model):")
    print(f"    baseline (PNG Dataset, DataLoader): {path.baseline:10.1f}")
    print(f"    medaudit (device tensors):          {path.ours:10.1f}")
    print(f"data-path ratio: {path.ours / path.baseline:.1f}")
    print("(b) end to end, fine-tuning images per second:")
    print(f"    baseline: {e2e.baseline:10.1f}")
    print(f"    medaudit: {e2e.ours:10.1f}")
    print(f"end-to-end ratio: {e2e.ours / e2e.baseline:.2f}")
    path_charged = served / (served / path.ours + total_one_time)
    e2e_charged = served / (served / e2e.ours + total_one_time)
    print(
        f"with all of medaudit's one-time work charged to these {args.steps} steps alone "
        f"(an audit shares it across every epoch, model and run): data-path ratio "
        f"{path_charged / path.baseline:.1f}, end-to-end ratio {e2e_charged / e2e.baseline:.2f}"
    )


if __name__ == "__main__":
    main()
