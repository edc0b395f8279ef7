"""What each subcommand does, from parsed arguments to an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

from audit.constants import STUDY_FOLDS
from audit.errors import ExitCode, UsageError
from audit.resolve.settings import (
    FOUND,
    LOCKED,
    NAMED,
    Settings,
    SettingsOrigin,
    build_settings,
    dotted,
    find_config_file,
    read_config_table,
    threshold_sources,
)

if TYPE_CHECKING:
    from audit.resolve.check import ResolvedCheck
    from audit.resolve.data import DataChoice
    from audit.resolve.probe import ProbeOptions, ResolvedProbe

log = logging.getLogger("audit")


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("medaudit"))


def _parse_levels(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(
            f"--levels {text!r}: give comma-separated fractions, e.g. 0,0.5,1"
        ) from None


def _parse_views(text: str | None) -> tuple[str, ...]:
    """``--views PA,AP``; ``all`` keeps every view (an empty filter); not given: NIH's PA."""
    if text is None:
        return ("PA",)
    return () if text.strip().lower() == "all" else tuple(text.split(","))


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        conf, dot, key = name.partition(".")
        if not sep or not dot or not conf or not key:
            raise UsageError(
                f"--param {item!r}: expected CONFOUNDER.NAME=VALUE, e.g. tag.font_size=48"
            )
        params.setdefault(conf, {})[key] = value
    return params


# Each setting's command-line option (argparse's dest), for the locked-config refusal.
_SETTING_DESTS = {
    "levels": "levels", "folds": "folds", "repeats": "repeats", "seed": "seed",
    "image_size": "image_size", "margin": "margin", "alpha": "alpha", "n_resamples": "resamples",
    "min_clean_auc": "min_clean_auc", "min_detector_auc": "min_detector_auc",
    "with_random_init": "with_random_init", "confounders": "confounders",
    "confounder_params": "param", "train.epochs": "epochs", "train.batch_size": "batch_size",
    "train.lr": "lr", "train.patience": "patience", "train.max_steps_per_epoch": "max_steps",
    "train.input_size": "input_size", "train.normalize": "normalize",
    "train.deterministic": "deterministic",
}  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> tuple[Settings, SettingsOrigin]:
    """Defaults <- config file <- flags (the layering itself is `build_settings`'s), and where
    each setting came from. ``--locked-config FILE`` takes every setting from FILE: a flag that
    sets one is refused, and no file is searched for."""
    locked = getattr(args, "locked_config", None)
    if locked is not None and args.config is not None:
        raise UsageError("give `config` or `locked_config`, not both")
    config_path = locked or args.config or find_config_file(Path.cwd())
    file_values = read_config_table(config_path) if config_path else {}
    file_values.pop("reference_sha256", None)  # read by `reference fetch`, not an audit setting
    how = LOCKED if locked else NAMED if args.config else FOUND if config_path else None
    if config_path:
        log.info("settings from %s (%s)", config_path.name, how)
    if how == FOUND:
        _refuse_found_plugins(file_values, config_path.name)
    train_flags = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "patience": args.patience,
        "max_steps_per_epoch": args.max_steps,
        "input_size": args.input_size,
        "normalize": args.normalize,
        "deterministic": args.deterministic,
    }
    flags = {
        "levels": _parse_levels(args.levels),
        "folds": args.folds,
        "repeats": args.repeats,
        "seed": args.seed,
        "image_size": args.image_size,
        "margin": args.margin,
        "alpha": args.alpha,
        "n_resamples": args.resamples,
        "min_clean_auc": args.min_clean_auc,
        "min_detector_auc": args.min_detector_auc,
        "with_random_init": args.with_random_init,
        "confounders": tuple(args.confounders.split(",")) if args.confounders else None,
        "confounder_params": _parse_params(args.param) or None,
        "train": {k: v for k, v in train_flags.items() if v is not None},
    }
    given = [key for key, value in dotted(flags).items() if value is not None]
    if locked is not None:
        _refuse_unlocked(given, getattr(args, "confounder", []), config_path.name)
        _refuse_gate_options(getattr(args, "changed_flags", set()), config_path.name)
    origin = SettingsOrigin(
        file=config_path.name if config_path else None,
        how=how,
        from_file=dotted(file_values),
        from_flags=tuple(given),
    )
    protocol = None if getattr(args, "synthetic", False) else getattr(args, "protocol", None)
    return build_settings(file_values, flags, protocol), origin


# Options that change what the gate decides or how its exit code reads, but that a settings file
# cannot hold: with a locked file they keep their defaults (read from the parsed values, so an
# abbreviated flag is caught too).
_GATE_OPTIONS = (
    "--inconclusive-exit", "--protocol", "--max-shift", "--max-flip-rate", "--max-sex-auc-gap",
    "--threshold", "--probe-images",
)  # fmt: skip


def _refuse_gate_options(changed: set[str], file_name: str) -> None:
    found = [flag for flag in _GATE_OPTIONS if flag in changed]
    if found:
        raise UsageError(
            f"`locked_config`: {', '.join(found)} would change the gate outside {file_name}; a "
            "locked audit keeps their defaults (run it without `locked_config` to set them)"
        )


def _refuse_unlocked(given: list[str], plugins: list[str], file_name: str) -> None:
    """A locked audit (a release gate) takes its thresholds and training from one reviewed file."""
    named = [
        _SETTING_DESTS.get(key.split(".")[0] if key.startswith("confounder_params.") else key, key)
        for key in given
    ]
    if plugins:
        named.append("confounder")
    if named:
        options = ", ".join(f"`{name}`" for name in dict.fromkeys(named))
        raise UsageError(
            f"`locked_config` takes every setting from {file_name}; {options} set one on the "
            f"command line: put it in {file_name}, or leave it out"
        )


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, for the record, minus what may identify a patient: the value of every
    path option (``--data``, ``--out``...) becomes a placeholder such as ``<data>``, and a
    positional file (the model, a results.json) keeps only its file name. The command line
    hands over which options take a path (``args.path_placeholders``), read from its parser."""
    placeholders = args.path_placeholders
    words, hide_next = ["medaudit"], None
    for word in getattr(args, "typed", sys.argv[1:]):
        if hide_next:
            words.append(hide_next)
            hide_next = None
            continue
        flag, has_value, _ = word.partition("=")
        hidden = _placeholder(flag, placeholders) if word.startswith("--") else None
        if hidden and has_value:
            words.append(f"{flag}={hidden}")
        elif hidden:
            words.append(word)
            hide_next = hidden
        elif word.startswith("-"):
            words.append(word)
        else:
            words.append(PureWindowsPath(word).name if "/" in word or "\\" in word else word)
    return shlex.join(words)


def _placeholder(flag: str, placeholders: dict[str, str]) -> str | None:
    """Exact option, or one argparse would accept as an abbreviation (hidden when in doubt)."""
    if flag in placeholders:
        return placeholders[flag]
    prefixed = [v for k, v in placeholders.items() if len(flag) > 2 and k.startswith(flag)]
    return prefixed[0] if prefixed else None


def _exit_code(results: dict[str, Any], inconclusive_exit: int) -> int:
    """The audit's verdict; with ``--probe`` the worse of the audit's and the probe's."""
    if not results["status"]["complete"] or results.get("verdict") is None:
        return int(ExitCode.INTERNAL)
    return int(results["gate"]["exit_code"])  # the gate's own: it knows what was gated


def _refuse_found_plugins(file_values: dict[str, Any], file_name: str) -> None:
    """A settings file found by searching upwards (say, in a cloned repository) must not make
    medaudit import code: its plugin confounders load only when the user names the file."""
    listed = file_values.get("confounders")
    plugins = [c for c in listed if isinstance(c, str) and ":" in c] if listed else []
    if plugins:
        raise UsageError(
            f"{file_name} (found by searching from the current folder) names plugin confounder(s) "
            f"{', '.join(plugins)}, and loading one runs its code: pass --config {file_name} "
            "to use that file as it is"
        )


def _extra_confounders(args: argparse.Namespace) -> dict:
    from audit.confounders import load_plugin

    extra = {}
    for spec in args.confounder:
        conf = load_plugin(spec)
        extra[conf.name] = conf
    return extra


def resolve_check_args(args: argparse.Namespace) -> ResolvedCheck:
    """``check``'s flags and settings file, resolved and checked; nothing is loaded yet."""
    from audit.resolve.check import resolve_check
    from audit.resolve.constraints import SettingError, check_setting
    from audit.resolve.devices import ExecutorChoice

    settings, origin = settings_from_args(args)  # before any plugin is imported
    extra = _extra_confounders(args)
    if extra and "confounders" not in origin.from_flags:  # `--confounder` adds to the list
        origin = dataclasses.replace(origin, from_flags=(*origin.from_flags, "confounders"))
    if extra:
        names = tuple(dict.fromkeys([*settings.confounders, *extra]))
        settings = dataclasses.replace(settings, confounders=names)
    _check_probe_flags(args)
    if args.synthetic:
        check_setting("synthetic_patients", args.synthetic_patients)
    resolved = resolve_check(
        settings,
        modality=args.modality,
        extra=extra,
        device=args.device,
        executor=ExecutorChoice(
            args.executor,
            {
                "ray_address": args.ray_address,
                "shared_cache": args.shared_cache,
                "ray_cpus_per_task": args.ray_cpus_per_task,
            },
        ),
        protocol=None if args.synthetic else args.protocol,
        dry_run=args.dry_run,
        origin=origin,
    )
    if not args.probe:
        return resolved
    try:
        return resolved.with_probe(probe_options(args, check=True))
    except SettingError:
        raise  # it names its own flag
    except UsageError as error:
        raise UsageError(f"--probe: {error}") from None


def probe_options(args: argparse.Namespace, *, check: bool) -> ProbeOptions:
    """The probe's own flags, on ``probe`` and on ``check --probe`` (named differently there)."""
    from audit.resolve.probe import ProbeOptions

    images = args.probe_images if check else args.max_images
    return ProbeOptions(
        max_shift=args.max_shift, max_flip_rate=args.max_flip_rate,
        max_sex_auc_gap=args.max_sex_auc_gap, threshold=args.threshold,
        max_images=images,
        batch_size=ProbeOptions.batch_size if check else args.batch_size,
        score_output=args.score_output, activation=args.activation, placebo=args.placebo,
    )  # fmt: skip


def run_check(args: argparse.Namespace) -> int:
    resolved = resolve_check_args(args)
    settings = resolved.settings
    cache_dir = args.cache_dir or default_cache_dir()
    data = data_choice(
        args, image_size=settings.image_size, seed=settings.seed, cache_dir=cache_dir
    )
    _check_cache_outside_out(cache_dir, args.out)
    _check_writable(cache_dir, "cache_dir")
    if args.shared_cache is not None:
        _check_cache_outside_out(args.shared_cache, args.out, "--shared-cache")
    from audit.run.out_folder import check_out_folder, claim_out_folder

    if args.dry_run:
        check_out_folder(args.out)  # the plan is only worth its GPU time if --out can be written
        return _dry_run(args, resolved, data)

    declared = _declared(settings, resolved.origin)
    with claim_out_folder(args.out, _command_line(args), "audit", declared):
        return _run_check(args, resolved, data, cache_dir)


def _declared(settings: Settings, origin: SettingsOrigin) -> dict[str, Any]:
    """The thresholds declared before the runs and where each came from, as results.json
    records them meanwhile."""
    counted = list(settings.counted_levels) if settings.counted_levels else None
    return {
        "margin": settings.margin, "alpha": settings.alpha, "counted_levels": counted,
        "min_clean_auc": settings.min_clean_auc, "min_detector_auc": settings.min_detector_auc,
        "sources": threshold_sources(origin),
    }  # fmt: skip


def _run_check(
    args: argparse.Namespace, resolved: ResolvedCheck, data: DataChoice, cache_dir: Path
) -> int:
    """The audit proper, in a claimed --out folder: models, data, probe, runs, outputs."""
    from audit.models.loading import load_model, load_reference
    from audit.pipeline import AuditRequest, run_audit

    settings = resolved.settings
    user = load_model(
        args.model, arch=args.arch, trust_code=args.trust_code, trust_pickle=args.trust_pickle
    )
    from audit.models.input_size import check_input_size

    check_input_size(user.backbone, settings.train.input_size)  # before any image is decoded
    from audit.models.fetch import cached_reference, how_to_get_reference

    reference_path = args.reference or cached_reference(cache_dir)
    if reference_path is None:
        raise UsageError(how_to_get_reference())
    reference = load_reference(reference_path)
    opened = _open_check_probe(args, resolved, user) if resolved.probe else None
    from audit.data.loading import load_chosen

    cohort = load_chosen(data)  # after the models: a bad model fails before any decoding
    probe_results = None
    if opened is not None:
        from audit.probe.assemble import probe_cohort

        log.info("probing the shipped model before the fine-tuning runs")
        probe_results = probe_cohort(
            opened, cohort, model_sha256=user.sha256, command=_command_line(args)
        )
        del opened  # the shipped model leaves the device before fine-tuning starts
        _release_device_memory()
    request = AuditRequest(
        settings=settings,
        cohort=cohort,
        models=_audited_models(args, settings, user, reference, Path(reference_path).name),
        out_dir=args.out,
        command=_command_line(args),
        confounders=resolved.confounders,
        protocol=resolved.protocol,
        executor=resolved.executor.build(resolved.devices),
        probe=probe_results,
        write_report=not args.no_report,
        inconclusive_exit=args.inconclusive_exit,
        origin=resolved.origin,
    )
    outputs = run_audit(request)  # writes every output format, the console summary last
    return _exit_code(outputs.results, args.inconclusive_exit)


def _audited_models(
    args: argparse.Namespace, settings: Settings, user: Any, reference: Any, reference_name: str
) -> list:
    """(ModelRef, backbone) of each arm: the user's model, the reference, and the optional
    random-initialisation control."""
    from audit.plan.grid import ModelRef

    models = [
        (
            ModelRef(
                "user",
                user.arch,
                user.sha256,
                user.format,
                user.preprocessing,
                args.model.name,
                {"trust_code": args.trust_code, "trust_pickle": args.trust_pickle},
            ),  # fmt: skip
            user.backbone,
        ),
        (
            ModelRef(
                "reference",
                reference.arch,
                reference.sha256,
                reference.format,
                reference.preprocessing,
                reference_name,
                {"trust_code": False, "trust_pickle": False},  # a reference never runs code
            ),  # fmt: skip
            reference.backbone,
        ),
    ]
    if settings.with_random_init:
        from audit.models.architectures import random_init_like

        models.append(
            (
                ModelRef(
                    "random-init",
                    user.arch,
                    f"random-init-seed-{settings.seed}",
                    "none",
                    user.preprocessing,
                    f"{user.arch}, random initialisation",
                    {},
                ),  # fmt: skip
                random_init_like(user.backbone, settings.seed),
            )
        )
    return models


def _check_probe_flags(args: argparse.Namespace) -> None:
    """Set without --probe, a probe flag would silently do nothing: refuse it."""
    if args.probe:
        return
    given = [k for k, default in args.probe_flag_defaults.items() if getattr(args, k) != default]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UsageError(f"{flags} set(s) the probe: add --probe, or leave them out")


def _release_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _open_check_probe(args: argparse.Namespace, resolved: ResolvedCheck, user: Any):  # noqa: ANN202
    """Open the user's model whole for ``--probe`` and try it, before any image is decoded.
    It is fed as the fine-tuning feeds it: the audit's input size and the model's preprocessing."""
    from audit.probe.assemble import ShippedModel, open_probe

    normalize = resolved.settings.train.normalize
    model = ShippedModel(
        args.model, resolved.devices[0] if resolved.devices else "auto", arch=args.arch,
        trust_code=args.trust_code, trust_pickle=args.trust_pickle,
        default_input_size=resolved.settings.train.input_size,
        normalize=user.preprocessing if normalize == "auto" else normalize,
    )  # fmt: skip
    if resolved.probe.skipped:
        log.warning(
            "--probe: not probed (they select cases, pixels stay): %s",
            ", ".join(resolved.probe.skipped),
        )
    try:
        return open_probe(model, resolved.probe)
    except UsageError as error:
        raise UsageError(f"--probe: {error}") from None


def data_choice(args: argparse.Namespace, *, image_size: int, seed: int, cache_dir: Path):  # noqa: ANN201
    """The data flags of ``check`` and ``probe`` as one resolved choice (checked now)."""
    from audit.resolve.data import DataChoice

    return DataChoice(
        args.modality, image_size, cache_dir, path=args.data, synthetic=args.synthetic,
        source=args.source, finding=args.finding, views=_parse_views(args.views),
        protocol=getattr(args, "protocol", None), strict=args.strict,
        synthetic_patients=args.synthetic_patients, seed=seed, progress=sys.stderr.isatty(),
        max_image_pixels=args.max_image_pixels, source_options=_source_options(args),
    )  # fmt: skip


def _source_options(args: argparse.Namespace) -> dict[str, str]:
    """The options only some sources read, as typed: --uncertain, --negatives, --views (NIH
    reads its views itself, PA when not given; CheXpert-style sources keep frontal views)."""
    options = {
        key: value
        for key in ("uncertain", "negatives")
        if (value := getattr(args, key, None)) is not None
    }
    if getattr(args, "views", None) is not None:  # typed: each source reads it its own way
        options["views"] = args.views
    return options


def _dry_run(args: argparse.Namespace, resolved: ResolvedCheck, data: DataChoice) -> int:
    """The data found and the plan, after every setting was checked; no model is loaded."""
    if args.synthetic:
        raise UsageError("--dry-run describes a data set on disk; it needs --data, not --synthetic")
    from audit.data.loading import describe_dry_run, request_for

    settings = resolved.settings
    summary = describe_dry_run(request_for(data))
    n_models = 3 if settings.with_random_init else 2
    folds = STUDY_FOLDS if args.protocol else settings.folds
    summary["plan"] = {
        "confounders": list(resolved.confounders),
        "levels": list(settings.levels),
        "folds": folds,
        "repeats": settings.repeats,
        "models": n_models,
        "runs": len(resolved.confounders)
        * len(settings.levels)
        * folds
        * settings.repeats
        * n_models,
    }
    summary["resolved"] = resolved.record()
    from audit.analysis.planning import plan_power, planned_test_sets_from_counts

    test_sets = planned_test_sets_from_counts(
        summary, resolved.confounders, test_fraction=settings.test_fraction
    )
    summary["power"] = plan_power(
        test_sets, folds=folds, repeats=settings.repeats, margin=settings.margin,
        alpha=settings.alpha,
    )  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_dry_run_text(summary))
    return 0


def _dry_run_text(summary: dict[str, Any]) -> str:
    """What a person reads before committing GPU time: the data found and the plan."""

    def counts(c: dict[str, Any]) -> str:
        sexes = ", ".join(f"{k} {v}" for k, v in c.get("sex", {}).items())
        return (
            f"{c['images']} images of {c['patients']} patients: {c['positive']} positive, "
            f"{c['negative']} negative ({sexes})"
        )

    plan = summary["plan"]
    lines = [
        f"source:    {summary['source']} ({'detected' if summary['detected'] else 'as given'})",
        f"modality:  {summary['modality']}"
        + (f", protocol {summary['protocol']}" if summary.get("protocol") else ""),
        f"cohort:    {counts(summary)}",
    ]
    for name, split in summary.get("splits", {}).items():
        lines.append(f"  {name}: {counts(split)}")
    if summary.get("excluded_total"):
        reasons = ", ".join(f"{k}: {v}" for k, v in summary["excluded"].items())
        lines.append(f"left out: {summary['excluded_total']} file(s) ({reasons})")
    for warning in summary.get("overlap_warnings", []):
        lines.append(f"warning:   {warning}")
    for note in summary.get("notes", []):
        lines.append(f"note:      {note}")
    lines.append(
        f"plan:      {plan['runs']} fine-tuning runs = {len(plan['confounders'])} confounder(s) "
        f"({', '.join(plan['confounders'])}) x {len(plan['levels'])} level(s) x {plan['folds']} "
        f"fold(s) x {plan['repeats']} repeat(s) x {plan['models']} models"
    )
    resolved = summary["resolved"]
    for rc in resolved["confounders"]:
        params = ", ".join(f"{k}={v}" for k, v in rc["params"].items())
        preset = f", preset {rc['preset']}" if rc["preset"] else ""
        where = f"at {rc['work_size']} px{preset}" if rc["work_size"] else preset[2:]
        where = "selects cases, pixels unchanged" if rc["kind"] == "sampling" else where
        lines.append(f"  {rc['name']} ({where}): {params or 'no parameters'}")
    train = resolved["train"]
    lines.append(
        f"training:  {train['epochs']} epochs, batch {train['batch_size']}, lr {train['lr']:g}, "
        f"patience {train['patience']}, input {train['input_size']} px, devices "
        f"{', '.join(resolved['devices']) or 'the cluster'}"
    )
    momentum = train.get("bn_momentum")
    lines.append(
        f"           head {train.get('head')}, Adam eps {train.get('adam_eps'):g}, BatchNorm "
        f"momentum {'each layer' + chr(39) + 's own' if momentum is None else f'{momentum:g}'}"
    )
    lines.append(f"controls:  min clean AUC {resolved.get('min_clean_auc')}, min detector AUC "
                 f"{resolved.get('min_detector_auc')}")  # fmt: skip
    from audit.report.formatting import settings_origin_text

    lines.append(f"settings:  {settings_origin_text(resolved['settings_origin'])}")
    from audit.analysis.planning import power_lines

    lines.extend(power_lines(summary["power"]))
    lines.append("(use --json for the full summary)")
    return "\n".join(lines)


def _check_writable(folder: Path, option: str) -> None:
    """A folder the run will write to, tried now: a read-only cache must not be found only after
    the models and data are loaded."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"the `{option}` folder cannot be written ({exc.strerror or type(exc).__name__}); "
            f"choose another with `{option}`"
        ) from None


def _check_cache_outside_out(cache_dir: Path, out_dir: Path, flag: str = "--cache-dir") -> None:
    """Decoded patient pixels never go where CI uploads from."""
    cache, out = Path(cache_dir).resolve(), Path(out_dir).resolve()
    if cache == out or out in cache.parents:
        raise UsageError(f"{flag} must not be inside --out: CI systems upload --out")


def run_demo(args: argparse.Namespace) -> int:
    from audit.demo.run import run_demo_audit

    cache_dir = args.cache_dir or default_cache_dir()
    _check_cache_outside_out(cache_dir, args.out)
    if args.executor != "local":
        raise UsageError(
            "medaudit demo runs locally; for Ray use: medaudit check --synthetic --executor ray"
        )
    from audit.run.out_folder import claim_out_folder

    with claim_out_folder(args.out, _command_line(args), "demo"):
        results = run_demo_audit(
            args.out,
            cache_dir,
            quick=args.quick,
            device=args.device,
            deterministic=bool(args.deterministic),
            command=_command_line(args),
            seed=args.seed,
        )
    return 0 if results["status"]["complete"] else int(ExitCode.INTERNAL)


def run_report(args: argparse.Namespace) -> int:
    from audit.report.render import render_report
    from audit.schema import validate_results

    def no_constants(name: str) -> None:  # NaN and Infinity are not JSON; results.json has none
        raise ValueError(f"it holds {name}, which strict JSON does not allow")

    try:
        results = json.loads(args.results.read_text(encoding="utf-8"), parse_constant=no_constants)
    except FileNotFoundError:
        raise UsageError(f"results file not found: {args.results.name}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {args.results.name} as JSON: {exc}") from None
    if not isinstance(results, dict):
        raise UsageError(f"{args.results.name} is not medaudit results: not a JSON object")
    if results.get("kind") == "in_progress":
        raise UsageError(
            f"{args.results.name} is from a run that has not finished (or was stopped): there is "
            "no result to report yet; run the same command again to resume it"
        )
    import jsonschema

    from audit.schema import validate_probe_results

    validate = validate_probe_results if results.get("kind") == "probe" else validate_results
    try:
        validate(results)
    except jsonschema.ValidationError as exc:
        raise UsageError(f"{args.results.name} is not medaudit results: {exc.message}") from None
    out = args.out or args.results.with_name("report.pdf")
    render_report(results, out, results_json=args.results.read_bytes())
    print(f"report: {out}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from audit.models.inspection import inspect_model

    found = inspect_model(
        args.model, arch=args.arch, trust_code=args.trust_code, trust_pickle=args.trust_pickle
    )
    print(json.dumps(found.as_dict(), indent=2) if args.json else "\n".join(found.lines()))
    return 0


def resolve_probe_args(args: argparse.Namespace) -> ResolvedProbe:
    """``probe``'s flags resolved through the same functions as ``check --probe``'s."""
    from audit.resolve.confounders import resolve_confounders
    from audit.resolve.constraints import check_setting
    from audit.resolve.probe import resolve_probe

    for key, value in (("seed", args.seed), ("probe.input_size", args.input_size),
                       ("synthetic_patients", args.synthetic_patients),
                       ("max_image_pixels", args.max_image_pixels)):  # fmt: skip
        check_setting(key, value)
    if args.image_size is not None:
        check_setting("image_size", args.image_size)
    names = tuple(c.strip() for c in args.confounders.split(",") if c.strip())
    confounders = resolve_confounders(
        names, _parse_params(args.param), args.modality, seed=args.seed, work_size=None
    )
    resolved = resolve_probe(
        confounders, probe_options(args, check=False), alpha=args.alpha,
        n_resamples=args.resamples, seed=args.seed,
    )  # fmt: skip
    if resolved.skipped:
        raise UsageError(
            f"confounder {resolved.skipped[0]!r} selects cases by an attribute; the probe "
            "compares subgroups by sex only"
        )
    return resolved


def run_probe(args: argparse.Namespace) -> int:
    """Check every flag, open the model, load the images, probe, write, and map the verdict."""
    from audit.resolve.devices import probe_device

    cache_dir = args.cache_dir or default_cache_dir()
    _check_cache_outside_out(cache_dir, args.out)
    resolved = resolve_probe_args(args)  # every value checked before any loading
    device = probe_device(args.device)
    _check_writable(cache_dir, "cache_dir")
    from audit.run.out_folder import claim_out_folder

    with claim_out_folder(args.out, _command_line(args), "probe"):
        return _run_probe(args, resolved, device, cache_dir)


def _run_probe(
    args: argparse.Namespace, resolved: ResolvedProbe, device: Any, cache_dir: Path
) -> int:
    """The probe proper, in a claimed --out folder."""
    from audit.analysis.verdict import exit_code_for
    from audit.common.hashing import file_sha256
    from audit.probe.assemble import ShippedModel, open_probe, probe_cohort

    model = ShippedModel(
        args.model, device, arch=args.arch, trust_code=args.trust_code,
        trust_pickle=args.trust_pickle, input_size=args.input_size, channels=args.channels,
        normalize=args.normalize, mean=args.mean, std=args.std,
    )  # fmt: skip
    opened = open_probe(model, resolved)
    spec = opened.preprocessor.spec
    from audit.data.loading import load_chosen

    size = args.image_size or min(2048, max(16, spec.height, spec.width))
    cohort = load_chosen(data_choice(args, image_size=size, seed=args.seed, cache_dir=cache_dir))
    results = probe_cohort(
        opened, cohort, model_sha256=file_sha256(str(args.model)), subset=args.subset,
        command=_command_line(args),
    )  # fmt: skip
    from audit.report.outputs import write_finished

    write_finished(results, args.out, skip=["report.pdf"] if args.no_report else [])
    return exit_code_for(results["verdict"]["overall"], args.inconclusive_exit)


def run_reference(args: argparse.Namespace) -> int:
    from audit.models import fetch

    cache_dir = args.cache_dir or default_cache_dir()
    if args.action == "list":
        print("\n".join(fetch.listing_lines(cache_dir)))
        return 0
    expected = fetch.expected_sha256(args.sha256, Path.cwd())
    url = args.url or fetch.DEFAULT_URL
    got = fetch.fetch_reference(url, cache_dir, expected=expected, progress=sys.stderr.isatty())
    entry = got.entry
    how = "already cached" if got.reused else f"fetched from {entry.url}"
    print(f"reference: {entry.name} ({entry.bytes / 1e6:.1f} MB), {how}")
    print(f"layout:    {entry.layout} ({entry.arch})")
    print(f"sha256:    {entry.sha256}" + ("" if expected else " (not pinned)"))
    print(f"path:      {got.path}")
    for note in (*got.notes, *([fetch.MIRROR_NOTE] if entry.url == fetch.DEFAULT_URL else [])):
        print(f"note:      {note}")
    if expected is None:
        print(f'pin it:    add {fetch.SHA256_SETTING} = "{entry.sha256}" under [tool.medaudit]')
    return 0
