"""Command line: parse arguments and call the stages; no audit logic lives here.

Exit codes (a contract with release pipelines): 0 pass, 1 fail, 2 bad usage or input,
3 inconclusive, 4 internal error or incomplete audit.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from audit import __version__
from audit.constants import DEFAULT_MAX_CHECKPOINT_GIB, DEFAULT_MAX_IMAGE_PIXELS, PROTOCOLS
from audit.data.registry import file_source_names
from audit.errors import ExitCode, MedauditError, UsageError
from audit.resolve.constraints import SettingError
from audit.run.executors import executor_kinds, executor_names

log = logging.getLogger("audit")

# Each setting's flag, per command: the one place that knows both names. Domain code refuses a
# value by its setting (``train.epochs``); the error line names the flag when a flag set it.
_COMMON_FLAGS = {
    "seed": "--seed", "alpha": "--alpha", "n_resamples": "--resamples",
    "image_size": "--image-size", "synthetic_patients": "--synthetic-patients",
    "device": "--device", "probe.max_shift": "--max-shift",
    "probe.max_flip_rate": "--max-flip-rate", "probe.max_sex_auc_gap": "--max-sex-auc-gap",
    "probe.threshold": "--threshold", "max_image_pixels": "--max-image-pixels",
    "max_checkpoint_gib": "--max-checkpoint-gib",
}  # fmt: skip
SETTING_FLAGS: dict[str, dict[str, str]] = {
    "check": {
        **_COMMON_FLAGS, "folds": "--folds", "repeats": "--repeats", "margin": "--margin", "train.epochs": "--epochs",
        "min_clean_auc": "--min-clean-auc", "min_detector_auc": "--min-detector-auc",
        "train.batch_size": "--batch-size", "train.lr": "--lr", "train.patience": "--patience",
        "train.max_steps_per_epoch": "--max-steps", "train.input_size": "--input-size",
        "probe.max_images": "--probe-images", "ray.cpus_per_task": "--ray-cpus-per-task",
    },
    "probe": {
        **_COMMON_FLAGS, "probe.max_images": "--max-images", "probe.batch_size": "--batch-size",
        "probe.input_size": "--input-size",
    },
    "demo": {"device": "--device", "seed": "--seed"},
}  # fmt: skip

EPILOG = """exit codes: 0 pass, 1 fail, 2 bad usage or input, 3 inconclusive,
4 internal error or incomplete audit (a crash is never mistaken for a verdict)"""


def _common_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out",
        type=Path,
        default=Path(default_out),
        help=f"output folder for results.json, report.pdf, junit.xml (default {default_out}); "
        "re-running into the same folder reuses finished runs",
    )
    run.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="folder for decoded images and pretrained stand-ins; never inside --out "
        "(default: the user cache folder)",
    )
    run.add_argument(
        "--device",
        default=None,
        help="torch device(s); several, comma-separated (cuda:0,cuda:1 or cpu,cpu), get one worker process each (default: cuda if present, else cpu)",
    )
    run.add_argument(
        "--executor",
        choices=executor_names(),
        default="local",
        help="where runs go: "
        + "; ".join(f"{kind.name} ({kind.summary})" for kind in executor_kinds()),
    )
    run.add_argument(
        "--ray-address",
        default=None,
        help="with --executor ray: the cluster's head (host:port, or auto on a cluster node); "
        "default: start a local Ray cluster for this audit",
    )
    run.add_argument(
        "--ray-cpus-per-task",
        type=int,
        default=None,
        metavar="N",
        help="with --executor ray on the CPU: CPUs (torch threads) each cell's task asks for (default 1)",
    )
    run.add_argument(
        "--shared-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --executor ray: a folder mounted on every Ray node; the decoded images are "
        "written there once and workers read them from it (default: through Ray's object store)",
    )
    run.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="deterministic kernels and cuDNN settings (slower, reproducible)",
    )


def _max_image_pixels(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
        help="images declaring more pixels (width x height) are left out before decoding "
        f"(default {DEFAULT_MAX_IMAGE_PIXELS:,}: 8000 x 8000)",
    )  # fmt: skip


def _label_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--uncertain", choices=("drop", "zeros", "ones"), default=None,
        help="CheXpert and MIMIC-CXR: what an uncertain (-1) label becomes (default drop)",
    )  # fmt: skip
    group.add_argument(
        "--negatives", choices=("no-finding", "absent"), default=None,
        help="CheXpert, MIMIC-CXR, PadChest: negatives are images with no finding (default), "
        "or every image without the chosen one",
    )  # fmt: skip


def _max_checkpoint_gib(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument(
        "--max-checkpoint-gib", type=float, default=None, metavar="GIB",
        help="model files larger than this, or zip checkpoints declaring more, are refused "
        f"before decompressing (default {DEFAULT_MAX_CHECKPOINT_GIB:g})",
    )  # fmt: skip


def _protocol_options(parser: argparse.ArgumentParser) -> None:
    proto = parser.add_argument_group(
        "protocol (defaults: the study's; also settable in medaudit.toml)"
    )
    proto.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings file (default: ./medaudit.toml or [tool.medaudit] in ./pyproject.toml, "
        "searched upwards from the current folder; settings from a file found that way are listed "
        "on page 1 and in the console summary)",
    )
    proto.add_argument(
        "--locked-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a release gate's settings file: every threshold and training setting comes from "
        "FILE, a flag that sets one is refused (exit 2), and no other file is searched for",
    )
    proto.add_argument(
        "--confounders",
        default=None,
        help="comma-separated confounders to audit (default tag,denoise,noise,sex)",
    )
    proto.add_argument(
        "--confounder",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="add a user-defined confounder (a function returning a Confounder); repeatable",
    )
    proto.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="CONFOUNDER.NAME=VALUE",
        help="set a confounder parameter, e.g. tag.font_size=48 or tag.preset=study-small",
    )
    proto.add_argument(
        "--levels",
        default=None,
        help="comma-separated correlation levels (default 0,0.1,0.2,0.5,0.8,1)",
    )
    proto.add_argument("--folds", type=int, default=None, help="train/val folds (default 5)")
    proto.add_argument(
        "--repeats", type=int, default=None,
        help="independent training seeds per fold, sharing its split (default 1); a fold's "
        "repeats are averaged before any statistic",
    )  # fmt: skip
    proto.add_argument(
        "--seed", type=int, default=None, help="base seed of every random choice (default 0)"
    )
    proto.add_argument(
        "--image-size", type=int, default=None, help="side of the decoded image cache (default 256)"
    )
    proto.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs per run (default 30)"
    )
    proto.add_argument(
        "--batch-size", type=int, default=None, help="batch size (default 64; 256 under --protocol)"
    )
    proto.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    proto.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience in epochs (default 5; 30 under --protocol)",
    )
    proto.add_argument(
        "--max-steps", type=int, default=None, help="cap on steps per epoch (for smoke tests)"
    )
    proto.add_argument(
        "--input-size", type=int, default=None, help="model input side in pixels (default 224)"
    )
    proto.add_argument(
        "--normalize",
        choices=["auto", "imagenet", "radimagenet", "none"],
        default=None,
        help="input normalisation, recorded per run (default auto: what each model's "
        "pretraining used)",
    )
    proto.add_argument(
        "--with-random-init",
        action="store_true",
        default=None,
        help="add the study's random-initialisation control arm",
    )
    gate = parser.add_argument_group("verdict thresholds (declare them before the runs)")
    gate.add_argument(
        "--margin",
        type=float,
        default=None,
        help="the largest reliance gap D that can pass, declared before the runs (default 0.05)",
    )
    gate.add_argument(
        "--alpha", type=float, default=None, help="family-wise error rate (default 0.05)"
    )
    gate.add_argument(
        "--min-clean-auc",
        type=float,
        default=None,
        metavar="AUC",
        help="control: each gated model's clean AUC must have a lower 95%% bound above this, "
        "or the audit is incomplete (default 0.6)",
    )
    gate.add_argument(
        "--min-detector-auc",
        type=float,
        default=None,
        metavar="AUC",
        help="control: a detector must tell each pixel artifact from clean images at the "
        "input size with this held-out AUC, or the confounder is not tested (default 0.9)",
    )
    gate.add_argument(
        "--resamples",
        type=int,
        default=None,
        help="bootstrap resamples of the probe's intervals with --probe (default 2000)",
    )
    gate.add_argument(
        "--inconclusive-exit",
        type=exit_status,
        default=3,
        help="exit code for an inconclusive verdict (default 3; 1 fails CI on it; 0 counts it as pass, and every output says so)",
    )


def exit_status(text: str) -> int:
    """An exit code a shell can report: 0 to 255 (argparse turns the error into one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value} is not an exit code: use 0 to 255")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medaudit",
        description="Audit a medical-imaging classifier for shortcut learning: fine-tune it on data "
        "where a confounder correlates with the label, side by side with a RadImageNet "
        "reference, and measure how far its AUC falls when the correlation is reversed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medaudit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser(
        "check",
        help="audit a checkpoint against a reference (fine-tuning)",
        description="Audit MODEL: confounded fine-tuning beside --reference, then "
        "results.json, report.pdf, junit.xml and an exit code.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "model", type=Path, help="the checkpoint to audit (PyTorch state_dict, safetensors, ...)"
    )
    check.add_argument("--modality", choices=["cxr", "ct"], required=True, help="chest X-ray or CT")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="data set folder or manifest CSV")
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="use the built-in phantom data (every output is marked illustrative)",
    )
    data = check.add_argument_group("data (with --data)")
    data.add_argument(
        "--source",
        choices=file_source_names(),
        default=None,
        help="data layout (default: recognised from the folder and printed)",
    )
    data.add_argument(
        "--finding",
        default="Atelectasis",
        help="NIH finding to predict; negatives are 'No Finding'",
    )
    data.add_argument(
        "--views",
        default=None,
        help="views to keep, comma-separated (NIH: PA, AP; default PA); CheXpert, MIMIC-CXR, "
        "PadChest: view codes or frontal/lateral (default frontal); 'all' keeps every view",
    )
    data.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help="the study's experiment: its exact NIH image lists and folds (NIH data only; levels "
        "among 0,0.1,0.2,0.5,0.8,1) and its training values (batch 256, patience 30, BatchNorm "
        "momentum 0.01, Adam eps 1e-7, two-way softmax head; a flag or file still overrides)",
    )
    data.add_argument(
        "--strict",
        action="store_true",
        help="any unreadable file is an error (exit 2), not left out",
    )
    _max_image_pixels(data)
    _max_checkpoint_gib(data)
    _label_options(data)
    data.add_argument(
        "--json", action="store_true", help="with --dry-run: print the summary as one JSON object"
    )
    check.add_argument(
        "--no-report",
        action="store_true",
        help="write results.json and junit.xml but no report.pdf (e.g. on a GPU node without "
        "WeasyPrint's libraries); render it later anywhere with: medaudit report results.json",
    )
    data.add_argument(
        "--dry-run",
        action="store_true",
        help="read the data, print the cohort (counts per split, class, sex), left-out files, warnings and the plan, and stop",
    )
    check.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="reference checkpoint, e.g. RadImageNet ResNet50, in any published layout "
        "(default: the one 'medaudit reference fetch' cached)",
    )
    check.add_argument(
        "--arch", default=None, help="architecture of MODEL when it cannot be recognised"
    )
    check.add_argument(
        "--trust-code", action="store_true", help="allow TorchScript checkpoints (they run code)"
    )
    check.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickled whole modules (unpickling runs code: only for files you trust)",
    )
    check.add_argument(
        "--synthetic-patients", type=int, default=300, help="phantom patients with --synthetic"
    )
    _common_run_options(check, "medaudit-out")
    _protocol_options(check)
    _check_probe_options(check)
    check.set_defaults(handler="check")

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline on built-in synthetic data (CPU, minutes)",
        description="Pretrain two small stand-in backbones (natural textures vs "
        "phantom medical images), audit one against the other over all "
        "four confounders, and write report.pdf and results.json. "
        "Exits 0 when it completes; the verdict is shown, not used as exit code.",
    )
    _common_run_options(demo, "medaudit-demo")
    demo.add_argument(
        "--quick", action="store_true", help="a much smaller run (seconds), for smoke tests"
    )
    demo.add_argument(
        "--seed", type=int, default=0,
        help="base seed of the phantom data, the splits and every run (default 0); the stand-in "
        "backbones stay the same, so two seeds show how far the verdict moves between audits",
    )  # fmt: skip
    demo.set_defaults(handler="demo")

    report = sub.add_parser("report", help="re-render report.pdf from results.json (no training)")
    report.add_argument("results", type=Path, help="a results.json written by medaudit")
    report.add_argument(
        "--out", type=Path, default=None, help="PDF path (default: report.pdf beside results)"
    )
    report.set_defaults(handler="report")

    inspect = sub.add_parser(
        "inspect",
        help="show what a checkpoint holds (format, architecture, hash) and whether check can audit it",
        description="Describe MODEL without auditing it: format, recognised architecture, "
        "parameter count, input channels, classifier, SHA-256, and whether `check` can audit it.",
    )
    inspect.add_argument("model", type=Path, help="the model file (any format; read by content)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead")
    inspect.add_argument(
        "--arch", default=None, help="architecture of MODEL when it cannot be recognised"
    )
    inspect.add_argument(
        "--trust-code", action="store_true", help="allow TorchScript checkpoints (they run code)"
    )
    inspect.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickled whole modules (unpickling runs code: only for files you trust)",
    )
    _max_checkpoint_gib(inspect)
    inspect.set_defaults(handler="inspect")

    _probe_parser(sub)

    _reference_parser(sub)
    return parser


def _check_probe_options(check: argparse.ArgumentParser) -> None:
    probe = check.add_argument_group(
        "probe (with --probe)",
        "Before fine-tuning, probe MODEL as shipped, classifier included: score up to "
        "--probe-images of the data clean and with each confounder added (as 'medaudit probe' "
        "does, with the audit's seed, alpha, resamples, confounders, --input-size and the model's "
        "preprocessing). The probe's results go into results.json, junit.xml and the report; the "
        "exit code is the worse of the two verdicts.",
    )
    probe.add_argument(
        "--probe", action="store_true",
        help="run the training-free probe first and include it (MODEL must keep its classifier)",
    )  # fmt: skip
    probe.add_argument(
        "--probe-images", type=int, default=1000, metavar="N",
        help="images probed, a seeded label-stratified sample (default 1000; 0: all)",
    )  # fmt: skip
    _score_options(probe)
    _probe_gate_options(probe)
    _placebo_option(probe)
    # Each probe flag's default, read from the group itself: set without --probe, a flag is refused.
    check.set_defaults(
        probe_flag_defaults={a.dest: a.default for a in probe._group_actions if a.dest != "probe"}
    )


def _reference_parser(sub: argparse._SubParsersAction) -> None:
    reference = sub.add_parser(
        "reference",
        help="download and list RadImageNet reference weights (the cache `check` uses)",
        description="Manage the reference weights cached under --cache-dir/references.",
    )
    actions = reference.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download a reference, verify its SHA-256 and that it loads, and cache it",
        description="Download a reference (resuming a broken download), check its SHA-256 "
        "against --sha256 or reference_sha256 in [tool.medaudit], check that it loads as a "
        "reference, and record it in the cache.",
    )
    fetch.add_argument(
        "--url",
        default=None,
        help="where to download from (default: ResNet50.pt of the unofficial Hugging Face "
        "mirror Lab-Rasool/RadImageNet)",
    )
    fetch.add_argument(
        "--sha256",
        default=None,
        metavar="HEX",
        help="expected SHA-256; a file that differs is refused and removed "
        "(default: reference_sha256 in the settings file, else not checked)",
    )
    listing = actions.add_parser("list", help="show the cached references")
    for action in (fetch, listing):
        action.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help="cache folder; references go in its references/ (default: the user cache folder)",
        )
    reference.set_defaults(handler="reference")


def _score_options(group: argparse._ArgumentGroup) -> None:
    """Which output of the model is the score, and how it becomes a probability."""
    group.add_argument(
        "--score-output", default=None, metavar="OUTPUT[:COLUMN]",
        help="the score: an output name or index, and a column of it, e.g. logits:1 or 0:3 "
        "(default: the first output's one column, or column 1 of two)",
    )  # fmt: skip
    group.add_argument(
        "--activation", choices=["auto", "none", "sigmoid", "softmax"], default="auto",
        help="how outputs become probabilities (default auto: values in [0, 1] as they are, "
        "else a sigmoid for one logit, a softmax for two)",
    )  # fmt: skip


def _probe_gate_options(group: argparse._ArgumentGroup) -> None:
    """The probe's thresholds, declared before it runs (probe and check --probe alike)."""
    group.add_argument(
        "--max-shift", type=float, default=0.05,
        help="largest tolerated mean score shift, either sign, in probability (default 0.05)",
    )  # fmt: skip
    group.add_argument(
        "--max-flip-rate", type=float, default=0.05,
        help="largest tolerated fraction of flipped decisions (default 0.05)",
    )  # fmt: skip
    group.add_argument(
        "--max-sex-auc-gap", type=float, default=None,
        help="gate sex on the AUC gap between sexes (default: reported, not gated)",
    )  # fmt: skip
    group.add_argument(
        "--threshold", type=float, default=None,
        help="operating threshold on the probability scale (default: Youden's J on the clean "
        "probed images)",
    )  # fmt: skip


def _placebo_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--placebo", action="store_true",
        help="also score each pixel confounder's placebo, its own pixel changes scattered at "
        "random, to tell a shortcut from sensitivity to any change of that size (descriptive; "
        "one more pass over the images per confounder)",
    )  # fmt: skip


def _probe_parser(sub: argparse._SubParsersAction) -> None:
    probe = sub.add_parser(
        "probe",
        help="training-free counterfactual probe of a shipped model (ONNX or PyTorch)",
        description="Score held-out images clean and with each confounder added, and measure how "
        "far MODEL's output moves: mean score shift, decisions flipped, AUC change (sex: "
        "subgroups compared). Writes results.json, junit.xml and report.pdf into --out; exit code as check.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument(
        "model",
        type=Path,
        help="ONNX file (run by ONNX Runtime), PyTorch state_dict with its classifier, "
        "TorchScript (--trust-code) or pickled module (--trust-pickle)",
    )
    probe.add_argument("--modality", choices=["cxr", "ct"], required=True, help="chest X-ray or CT")
    source = probe.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="data set folder or manifest CSV")
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="use the built-in phantom data (every output is marked illustrative)",
    )
    data = probe.add_argument_group("data")
    data.add_argument(
        "--source", choices=file_source_names(), default=None,
        help="data layout (default: recognised from the folder)",
    )  # fmt: skip
    data.add_argument("--finding", default="Atelectasis", help="NIH finding (default Atelectasis)")
    data.add_argument(
        "--views", default=None,
        help="views to keep, comma-separated, or 'all' (NIH default PA; CheXpert-style: frontal)",
    )  # fmt: skip
    data.add_argument("--strict", action="store_true", help="any unreadable file is an error")
    _max_image_pixels(data)
    _max_checkpoint_gib(data)
    _label_options(data)
    data.add_argument(
        "--subset", default=None,
        help="images to probe: 'all' or a named list of the source (default: the official test "
        "list when the source has one, e.g. NIH's, else all)",
    )  # fmt: skip
    data.add_argument(
        "--max-images", type=int, default=1000,
        help="cap, by a seeded label-stratified sample (default 1000; 0: no cap)",
    )  # fmt: skip
    data.add_argument(
        "--image-size", type=int, default=None,
        help="side of the decoded image cache, where confounders are drawn (default: the model's "
        "input size)",
    )  # fmt: skip
    data.add_argument(
        "--synthetic-patients", type=int, default=100, help="phantom patients with --synthetic"
    )
    model = probe.add_argument_group("model and preprocessing")
    model.add_argument("--arch", default=None, help="architecture of a state_dict MODEL")
    model.add_argument(
        "--trust-code", action="store_true", help="allow TorchScript (a TorchScript file runs code)"
    )
    model.add_argument(
        "--trust-pickle", action="store_true",
        help="allow a pickled whole module (unpickling runs code: only for files you trust)",
    )  # fmt: skip
    _score_options(model)
    model.add_argument(
        "--input-size", type=int, default=None,
        help="model input side in pixels (default: what the model declares, else 224)",
    )  # fmt: skip
    model.add_argument(
        "--channels", type=int, choices=[1, 3], default=None,
        help="input channels (default: what the model declares, else 3)",
    )  # fmt: skip
    model.add_argument(
        "--normalize", choices=["imagenet", "radimagenet", "none"], default=None,
        help="input normalisation preset (default imagenet)",
    )  # fmt: skip
    model.add_argument("--mean", default=None, help="per-channel mean on the 0-1 scale, e.g. 0.5")
    model.add_argument("--std", default=None, help="per-channel std on the 0-1 scale, e.g. 0.25")
    model.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    model.add_argument(
        "--device", default=None,
        help="auto (default: the GPU when there is one), cpu, cuda or cuda:N",
    )  # fmt: skip
    proto = probe.add_argument_group("probe")
    proto.add_argument(
        "--confounders", default="tag,denoise,noise,sex",
        help="comma-separated confounders to probe (default tag,denoise,noise,sex)",
    )  # fmt: skip
    proto.add_argument(
        "--param", action="append", default=[], metavar="CONFOUNDER.NAME=VALUE",
        help="set a confounder parameter, e.g. tag.font_size=48 or noise.preset=ct",
    )  # fmt: skip
    proto.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    _placebo_option(proto)
    gate = probe.add_argument_group("verdict thresholds (declare them before the probe)")
    _probe_gate_options(gate)
    gate.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate")
    gate.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    gate.add_argument(
        "--inconclusive-exit", type=exit_status, default=3,
        help="exit code for an inconclusive verdict (default 3; set 1 to fail CI on it)",
    )  # fmt: skip
    run = probe.add_argument_group("run")
    run.add_argument(
        "--out", type=Path, default=Path("medaudit-probe"),
        help="output folder for results.json, junit.xml and report.pdf (default medaudit-probe)",
    )  # fmt: skip
    run.add_argument(
        "--no-report", action="store_true",
        help="no report.pdf: results.json and junit.xml only (fastest, for every-commit CI); "
        "render it later with: medaudit report results.json",
    )  # fmt: skip
    run.add_argument(
        "--cache-dir", type=Path, default=None,
        help="folder for decoded images; never inside --out (default: the user cache folder)",
    )  # fmt: skip
    probe.set_defaults(handler="probe")


def path_placeholders(parser: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """Every option whose value is a path (any subcommand), with what the recorded command shows
    instead: a folder or file name may carry a patient's name or id."""
    found: dict[str, str] = {}
    pending = [parser or build_parser()]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.type is Path and action.option_strings:
                for option in action.option_strings:
                    found[option] = f"<{action.dest.replace('_', '-')}>"
    return found


class _FlagNamingFormatter(logging.Formatter):
    """Log lines name options by their flag, as error lines do (see flags_for_names)."""

    def __init__(self, rename: Callable[[str], str] | None) -> None:
        super().__init__("medaudit: %(message)s")
        self.rename = rename

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        text = self.rename(text) if self.rename else text
        return text if record.exc_info else bounded(text)  # --debug tracebacks stay whole


def _configure_logging(
    debug: bool, quiet: bool, rename: Callable[[str], str] | None = None
) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FlagNamingFormatter(rename))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("matplotlib", "PIL", "fontTools", "weasyprint"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.showwarning = _log_warning


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A library's Python warning (Pillow's, pydicom's, torch's) as one medaudit line: its
    category and first line, paths replaced, bounded; never the raw form with the library's
    file and source line, nor a value it quotes at length."""
    logging.getLogger("audit.warnings").warning(
        "warning (%s): %s", category.__name__, scrubbed(str(message))
    )


def _by_flag(error: SettingError, args: argparse.Namespace) -> SettingError:
    """The refusal, naming the flag that set the value (a settings file's value keeps its key)."""
    flag = SETTING_FLAGS.get(args.handler, {}).get(error.key)
    typed = [word.partition("=")[0] for word in args.typed if word.startswith("--")]
    given = flag and any(
        flag == word or (len(word) > 2 and flag.startswith(word)) for word in typed
    )
    return error.named(flag) if given else error


def _command_options(
    parser: argparse.ArgumentParser, command: str | None
) -> Iterator[argparse.Action]:
    """Every option of ``command`` and of its own sub-commands (``reference fetch``), never the
    top level's: the one walk over the parser that option naming and change detection share."""
    pending, top = [parser], True
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(p for n, p in action.choices.items() if not top or n == command)
            elif action.option_strings and not top:
                yield action
        top = False


def option_flags(parser: argparse.ArgumentParser, command: str | None) -> dict[str, str]:
    """Option name (argparse's dest, e.g. ``trust_code``) -> its flag on ``command`` (and on the
    command's own sub-commands, such as ``reference fetch``)."""
    found: dict[str, str] = {}
    for action in _command_options(parser, command):
        found.setdefault(action.dest, max(action.option_strings, key=len))
    return found


def changed_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The flags whose parsed value differs from their default, however they were typed (an
    abbreviation, ``--flag=value``): what a locked settings file must not be loosened by."""
    return {
        max(action.option_strings, key=len)
        for action in _command_options(parser, getattr(args, "command", None))
        if getattr(args, action.dest, action.default) != action.default
    }


def flags_for_names(message: str, flags: dict[str, str], settings: dict[str, str]) -> str:
    """Domain code names an option as `name` (its keyword, e.g. `trust_code`) and a setting by its
    key (``probe.max_sex_auc_gap``); on the command line the message names the flag instead."""

    def option(match: re.Match[str]) -> str:
        name = match.group(1)
        return flags.get(name) or settings.get(name) or name

    message = re.sub(r"`([a-z_][a-z0-9_.]*)`", option, message)
    for key, flag in settings.items():
        if "." in key:
            message = re.sub(rf"(?<![\w.-]){re.escape(key)}(?![\w])", flag, message)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the one place that turns exceptions into exit codes."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, bad usage exits 2
        return int(exc.code or 0)
    flags, settings = option_flags(parser, args.command), SETTING_FLAGS.get(args.handler, {})
    _configure_logging(args.debug, args.quiet, lambda text: flags_for_names(text, flags, settings))
    args.typed = list(sys.argv[1:] if argv is None else argv)  # for the recorded command
    args.changed_flags = changed_flags(parser, args)  # what differs from the defaults
    args.path_placeholders = path_placeholders(parser)  # what the record hides
    try:
        from audit import commands
        from audit.models.formats import checkpoint_limit

        with checkpoint_limit(getattr(args, "max_checkpoint_gib", None)):
            return int(getattr(commands, f"run_{args.handler}")(args))
    except SettingError as exc:
        if args.debug:
            log.exception("error")
        print(f"medaudit: error: {bounded(_by_flag(exc, args))}", file=sys.stderr)
        return int(exc.exit_code)
    except MedauditError as exc:
        if args.debug:
            log.exception("error")
        said = flags_for_names(str(exc), flags, settings)
        print(f"medaudit: error: {bounded(said)}", file=sys.stderr)
        return int(exc.exit_code)
    except SystemExit as exc:  # a plugin or library tried to end the process: never a pass
        print(
            f"medaudit: internal error: something tried to exit the process (code {exc.code!r}) "
            "before medaudit finished; no verdict was reached",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)
    except KeyboardInterrupt:
        print(
            "medaudit: interrupted; finished runs are kept, re-run the same command to resume",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)
    except OSError as exc:
        if args.debug:
            log.exception("error")
        message = os_error_message(exc, args)
        if message is None:  # a library that failed to load, a network error: not the user's
            return _internal_error(exc)
        print(f"medaudit: error: {flags_for_names(message, flags, settings)}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except Exception as exc:  # noqa: BLE001 - the contract: never a bare traceback
        if args.debug:
            log.exception("internal error")
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    print(
        f"medaudit: internal error ({type(exc).__name__}): {scrubbed(str(exc))}. Re-run with "
        "--debug for the traceback.",
        file=sys.stderr,
    )
    return int(ExitCode.INTERNAL)


_QUOTED_PATH = re.compile(r"""(['"])[^'"\n]*[/\\][^'"\n]*\1""")
_ABSOLUTE_PATH = re.compile(r"(?:\b[A-Za-z]:\\|(?<![\w.:/])/(?=[^\s'\"]))[^\s'\"]*")
_RELATIVE_PATH = re.compile(r"(?<![\w./\\:])(?:(?:[\w.-]+/){2,}[\w.-]*|[\w.-]*(?:\\[\w.-]*)+)")
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


_LONG_TOKEN = re.compile(r"\S{81,}")


def bounded(text: object) -> str:
    """A message as the terminal shows it: any word over 80 characters (a 100 kB `--param`
    value, say) cut to its first 40 and its length, so no input is echoed whole."""
    return _LONG_TOKEN.sub(
        lambda m: f"{m.group(0)[:40]}...({len(m.group(0))} characters)", str(text)
    )


def scrubbed(text: str, limit: int = 200) -> str:
    """An exception's text as a message may show it: the first line, with quoted strings that
    hold a path separator, absolute paths and relative paths of two or more separators replaced
    (a folder name can carry a patient's name or id; an unquoted path with spaces is replaced up
    to its first space), cut to ``limit`` characters. URLs and ``train/val`` are kept."""
    first = (text.strip().splitlines() or [""])[0]
    cleaned = _QUOTED_PATH.sub(lambda m: f"{m.group(1)}<path>{m.group(1)}", first)
    cleaned = _RELATIVE_PATH.sub("<path>", _ABSOLUTE_PATH.sub("<path>", cleaned))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def os_error_message(exc: OSError, args: argparse.Namespace) -> str | None:
    """A filesystem error the user can fix, as one line naming the folder's option (never its
    path); None for any other OSError (a library that failed to load, a network error, a
    closed pipe), which is an internal error."""
    where = _folder_of(exc, args)
    place = f"the {where} folder" if where else "a folder medaudit reads or writes"
    if exc.errno in _FULL:
        return f"no space left on the disk of {place}; free some space or choose another folder"
    if exc.errno in _DENIED:
        return f"permission denied in {place}; check that it can be read and written"
    if where is None or isinstance(exc, BrokenPipeError | ConnectionError | TimeoutError):
        return None
    reason = exc.strerror or type(exc).__name__
    return f"a file in {place} could not be read or written ({reason})"


def _folder_of(exc: OSError, args: argparse.Namespace) -> str | None:
    """Which option's folder the failing file is under (`out`, `cache_dir`, `data`...)."""
    names = [n for n in (exc.filename, exc.filename2) if isinstance(n, str | bytes | Path) and n]
    if not names:
        return None
    folders = {
        "out": getattr(args, "out", None),
        "cache_dir": getattr(args, "cache_dir", None) or _default_cache(),
        "shared_cache": getattr(args, "shared_cache", None),
        "data": getattr(args, "data", None),
    }
    matches: list[tuple[int, str]] = []
    for name in names:
        target = Path(os.fsdecode(name))
        for option, folder in folders.items():
            if folder is None:
                continue
            base = Path(folder)
            base = base.parent if base.suffix.lower() == ".csv" else base  # a manifest: its folder
            for a, b in (
                (target.absolute(), base.absolute()),
                (_resolved(target), _resolved(base)),
            ):
                if a.is_relative_to(b):
                    matches.append((len(b.parts), option))
    return f"`{max(matches)[1]}`" if matches else None  # the deepest folder that holds the file


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _default_cache() -> Path | None:
    from audit.commands import default_cache_dir

    try:
        return default_cache_dir()
    except Exception:  # noqa: BLE001 - only used to name a folder in a message
        return None


__all__ = ["main", "build_parser", "UsageError"]
