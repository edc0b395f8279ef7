"""Command line: parse arguments and call the stages; no audit logic lives here.

Exit codes (a contract with release pipelines): 0 pass, 1 fail, 2 bad usage or input,
3 inconclusive, 4 internal error or incomplete audit.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from audit import __version__
from audit.errors import ExitCode, MedauditError, UsageError

log = logging.getLogger("audit")

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
        "--deterministic",
        action="store_true",
        default=None,
        help="deterministic kernels and cuDNN settings (slower, reproducible)",
    )


def _protocol_options(parser: argparse.ArgumentParser) -> None:
    proto = parser.add_argument_group(
        "protocol (defaults: the study's; also settable in medaudit.toml)"
    )
    proto.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings file (default: ./medaudit.toml or [tool.medaudit] in ./pyproject.toml)",
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
        "--seed", type=int, default=None, help="base seed of every random choice (default 0)"
    )
    proto.add_argument(
        "--image-size", type=int, default=None, help="side of the decoded image cache (default 256)"
    )
    proto.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs per run (default 30)"
    )
    proto.add_argument("--batch-size", type=int, default=None, help="batch size (default 64)")
    proto.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    proto.add_argument(
        "--patience", type=int, default=None, help="early-stopping patience in epochs (default 5)"
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
        "--margin", type=float, default=None, help="shortcut-gap margin (default 0.05)"
    )
    gate.add_argument(
        "--alpha", type=float, default=None, help="family-wise error rate (default 0.05)"
    )
    gate.add_argument(
        "--resamples", type=int, default=None, help="bootstrap resamples (default 2000)"
    )
    gate.add_argument(
        "--inconclusive-exit",
        type=int,
        default=3,
        help="exit code for an inconclusive verdict (default 3; set 1 to fail CI on it)",
    )


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
        choices=["nih-cxr14", "lidc-idri", "manifest"],
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
        default="PA",
        help="NIH views to keep, comma-separated (PA, AP); 'all' keeps every view",
    )
    data.add_argument(
        "--protocol",
        choices=["source-matters"],
        default=None,
        help="the study's exact NIH image lists (currently with --dry-run only)",
    )
    data.add_argument(
        "--strict",
        action="store_true",
        help="any unreadable file is an error (exit 2), not left out",
    )
    data.add_argument(
        "--dry-run",
        action="store_true",
        help="read the data, print counts, left-out files and warnings as JSON, and stop",
    )
    check.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="reference checkpoint, e.g. RadImageNet ResNet50, in any published layout",
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
    demo.set_defaults(handler="demo")

    report = sub.add_parser("report", help="re-render report.pdf from results.json (no training)")
    report.add_argument("results", type=Path, help="a results.json written by medaudit")
    report.add_argument(
        "--out", type=Path, default=None, help="PDF path (default: report.pdf beside results)"
    )
    report.set_defaults(handler="report")

    inspect = sub.add_parser(
        "inspect", help="show what a checkpoint holds (format, architecture, hash)"
    )
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--arch", default=None)
    inspect.add_argument("--trust-code", action="store_true")
    inspect.add_argument("--trust-pickle", action="store_true")
    inspect.set_defaults(handler="inspect")

    probe = sub.add_parser(
        "probe", help="training-free counterfactual probe of a shipped model (not built yet)"
    )
    probe.add_argument("model", type=Path)
    probe.set_defaults(handler="probe")

    reference = sub.add_parser(
        "reference", help="manage reference weights and stored reference runs (not built yet)"
    )
    reference.add_argument("action", choices=["fetch", "list"])
    reference.set_defaults(handler="reference")
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("medaudit: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("matplotlib", "PIL", "fontTools", "weasyprint"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the one place that turns exceptions into exit codes."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, bad usage exits 2
        return int(exc.code or 0)
    _configure_logging(args.debug, args.quiet)
    try:
        from audit import commands

        return int(getattr(commands, f"run_{args.handler}")(args))
    except MedauditError as exc:
        if args.debug:
            log.exception("error")
        print(f"medaudit: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(
            "medaudit: interrupted; finished runs are kept, re-run the same command to resume",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)
    except Exception as exc:  # noqa: BLE001 - the contract: never a bare traceback
        if args.debug:
            log.exception("internal error")
        name = type(exc).__name__
        print(
            f"medaudit: internal error ({name}): {exc}. Re-run with --debug for the traceback.",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)


__all__ = ["main", "build_parser", "UsageError"]
