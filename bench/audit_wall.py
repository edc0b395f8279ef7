"""Wall time of one confounder's grid: medaudit's runner against the same runs, naively, in one run.

medaudit: the PNGs are decoded once into the cache (``load_cohort``, its workers started as
under ``medaudit check``), then ``audit.run.execute`` runs the grid (levels x folds x 2 models)
cell by cell: each (confounder, level, fold) is confounded once and shared by both models, and
every finished run goes to the results store.
Naive, as a user script does it: the same run specs one after another, each decoding every PNG
again, confounding its own sets and building its tensors before fine-tuning. Both sides fine-tune
with the same engine (``fine_tune``), models, seeds, device and threads, so the ratio is what the
runner saves; ``bench/train_throughput.py`` measures the per-step data path.

The models are two torchvision backbones built by ``create_backbone`` (random weights, seeded),
in the roles "user" and "reference". The full audit grid (4 confounders) is extrapolated from
the one measured, and the output says so.

    python bench/audit_wall.py                          # CPU: 64 images, 2 levels x 2 folds
    python bench/audit_wall.py --devices cuda --images 331 --levels 0,0.1,0.2,0.5,0.8,1 \
        --folds 5 --epochs 30 --patience 5 --batch-size 64 --arch resnet50 --input-size 224 \
        --naive-runs 12
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

# bench/ is on sys.path when this file runs as a script: the PNG maker is shared.
from train_throughput import PIXEL_CONFOUNDERS, SIDE, load_cohort_as_cli, make_pngs

from audit.data.cases import Cohort
from audit.data.decode import decode_file
from audit.data.loading import DataRequest
from audit.models.architectures import Backbone, create_backbone
from audit.plan.grid import ModelRef, RunSpec, build_runs
from audit.plan.splits import split_table
from audit.resolve.confounders import resolve_confounders
from audit.resolve.settings import Settings, TrainSettings
from audit.run.cells import AuditInputs, CellBuilder
from audit.run.execute import execute
from audit.run.executors import build_executor
from audit.run.store import ResultsStore
from audit.train.device import set_determinism
from audit.train.engine import RunResult, fine_tune

FULL_GRID_CONFOUNDERS = 4  # tag, denoise, noise, sex


def models(arch: str) -> list[tuple[ModelRef, Backbone]]:
    """Two seeded backbones of one architecture, as the user's model and the reference."""
    pairs = []
    for seed, role in enumerate(("user", "reference"), 1):
        torch.manual_seed(seed)
        ref = ModelRef(role, arch, f"bench-{arch}-{seed}", "bench", "imagenet", f"{arch} {role}")
        pairs.append((ref, create_backbone(arch)))
    return pairs


def settings_from(args: argparse.Namespace) -> Settings:
    train = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, patience=args.patience or args.epochs,
        input_size=args.input_size, normalize="imagenet",
    )  # fmt: skip
    return Settings(
        levels=args.levels, folds=args.folds, image_size=args.cache_size,
        confounders=(args.confounder,), train=train,
    )  # fmt: skip


def plan(
    cohort: Cohort, settings: Settings, pairs: list[tuple[ModelRef, Backbone]], out: Path
) -> tuple[AuditInputs, tuple[RunSpec, ...]]:
    """The grid as ``run_audit`` plans it: confounders, patient split, run specs, inputs."""
    confounders = resolve_confounders(
        settings.confounders, settings.confounder_params, cohort.modality,
        seed=settings.seed, work_size=settings.image_size,
    )  # fmt: skip
    splits = split_table(settings, cohort, confounders)
    refs = [ref for ref, _ in pairs]
    specs = build_runs(settings, refs, confounders, cohort.manifest_hash(), splits)
    inputs = AuditInputs(
        cohort=cohort, splits=splits, confounders=confounders,
        backbones={ref.role: backbone for ref, backbone in pairs}, base_seed=settings.seed,
    )  # fmt: skip
    return inputs, specs


def warm_up(inputs: AuditInputs, spec: RunSpec, device: torch.device) -> None:
    """One short run before either side is timed, so neither pays torch's first-call costs."""
    short = dataclasses.replace(spec.train, epochs=1, max_steps_per_epoch=1)
    data = CellBuilder(inputs, short.input_size, device).build(*spec.cell)
    fine_tune(dataclasses.replace(spec, train=short), inputs.backbones[spec.role], data, device)


def naive(
    specs: Sequence[RunSpec],
    inputs: AuditInputs,
    paths: Sequence[Path],
    request: DataRequest,
    device: torch.device,
) -> dict[str, RunResult]:
    """Each run on its own: decode every PNG (the cache's own Pillow call), confound, fine-tune."""
    results = {}
    for spec in specs:
        images = np.stack([decode_file(p, request.decode_settings)[0] for p in paths])
        run_inputs = dataclasses.replace(
            inputs, cohort=dataclasses.replace(inputs.cohort, images=images)
        )
        data = CellBuilder(run_inputs, spec.train.input_size, device).build(*spec.cell)
        results[spec.key] = fine_tune(spec, inputs.backbones[spec.role], data, device)
    return results


def parse_levels(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give levels like 0,0.5,1") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    add = parser.add_argument
    add("--images", type=int, default=64, help="synthetic 1024x1024 PNGs, one per patient (64)")
    add("--levels", type=parse_levels, default=(0.0, 1.0), help="correlation levels (0,1)")
    add("--folds", type=int, default=2, help="default 2 (the study: 5)")
    add("--epochs", type=int, default=2, help="default 2 (the study: 30)")
    add("--patience", type=int, default=None, help="early stopping (default: --epochs, none)")
    add("--batch-size", type=int, default=32, help="default 32")
    add("--arch", default="resnet18", help="torchvision backbone for both models (resnet18)")
    add("--input-size", type=int, default=64, help="model input side in px (default 64)")
    add("--cache-size", type=int, default=256, help="decoded cache side in px (default 256)")
    add("--confounder", default="tag", choices=PIXEL_CONFOUNDERS, help="the grid's confounder")
    add("--devices", default=default_device, help=f"runner devices (default {default_device})")
    add("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    add("--naive-runs", type=int, default=None, help="time only this many naive runs and scale")
    add("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="processes making PNGs")
    args = parser.parse_args(argv)
    if args.images < 12:
        parser.error("--images must be at least 12 (a patient-level split into train/val/test)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    set_determinism(False)  # as run_audit does without --deterministic
    folder = Path(tempfile.mkdtemp(prefix="medaudit-bench-"))
    try:
        run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, folder: Path) -> None:
    print(f"making {args.images} synthetic {SIDE}x{SIDE} PNGs ...", flush=True)
    manifest = make_pngs(folder, args.images, jobs=args.jobs)
    paths = sorted(folder.glob("img*.png"))  # manifest order
    request = DataRequest(manifest, "cxr", cache_dir=folder / "cache", image_size=args.cache_size)
    settings = settings_from(args)
    device = torch.device(args.devices.split(",")[0])

    began = time.perf_counter()
    cohort = load_cohort_as_cli(request)
    decode_s = time.perf_counter() - began
    inputs, specs = plan(cohort, settings, models(args.arch), folder / "out")
    warm_up(inputs, specs[0], device)

    began = time.perf_counter()
    executor = build_executor("local", tuple(args.devices.split(",")))
    outcome = execute(specs, inputs, ResultsStore(folder / "out"), executor)
    runner_s = time.perf_counter() - began
    ours = {r.key: r for r in outcome.results}

    timed = specs[: args.naive_runs] if args.naive_runs else specs
    began = time.perf_counter()
    theirs = naive(timed, inputs, paths, request, device)
    naive_s = (time.perf_counter() - began) * len(specs) / len(timed)
    report(args, settings, specs, (decode_s, runner_s, naive_s), ours, theirs, len(timed))


def report(args, settings, specs, seconds, ours, theirs, naive_timed: int) -> None:
    decode_s, runner_s, naive_s = seconds
    ours_s = decode_s + runner_s
    n = len(specs)
    print(
        f"{args.confounder} grid: {len(settings.levels)} levels x {args.folds} folds x 2 models = "
        f"{n} runs; {args.images} PNGs of {SIDE} px, cache {args.cache_size} px; {args.arch} at "
        f"{args.input_size} px, {args.epochs} epochs, batch {args.batch_size}; devices "
        f"{args.devices}, {args.threads} torch threads, torch {torch.__version__}"
    )
    print(
        f"medaudit runner: {ours_s:8.1f} s = decode once {decode_s:.1f} s + runs {runner_s:.1f} s "
        f"({runner_s / n:.2f} s per run after the one-time decode)"
    )
    scaled = "" if naive_timed == n else f", timed on the first {naive_timed} runs and scaled"
    print(
        f"naive, one run after another: {naive_s:8.1f} s ({naive_s / n:.2f} s per run: decode, "
        f"confound, build tensors, fine-tune{scaled})"
    )
    print(f"same AUCs on both sides: {_agreement(ours, theirs)}")
    print(f"ratio (naive / medaudit), one confounder: {naive_s / ours_s:.2f}")
    k = FULL_GRID_CONFOUNDERS
    full_ours, full_naive = decode_s + k * runner_s, k * naive_s
    print(
        f"extrapolated, not measured: full grid of {k} confounders ({k * n} runs), each costing "
        f"what {args.confounder} cost here, the decode paid once: medaudit {full_ours:.1f} s, "
        f"naive {full_naive:.1f} s, ratio {full_naive / full_ours:.2f}"
    )


def _agreement(ours: dict[str, RunResult], theirs: dict[str, RunResult]) -> str:
    """How many compared runs gave the same AUCs (a check that both sides ran the same runs)."""
    gaps = []
    for key, result in theirs.items():
        if key in ours:
            pairs = [(ours[key].auc[name], auc) for name, auc in result.auc.items()]
            gaps.append(max((abs(a - b) for a, b in pairs if a == a and b == b), default=0.0))
    same = sum(gap < 1e-6 for gap in gaps)
    worst = max(gaps, default=0.0)
    return f"{same} of {len(gaps)} runs compared (largest AUC difference {worst:.2g})"


if __name__ == "__main__":
    main()
