"""Domain code names an option by its keyword (`trust_code`), never by its flag: the command line
alone maps names to flags (``audit.cli.flags_for_names``), so a library user reads the keyword and
a command-line user the flag of the command being run."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from audit import cli
from audit.probe.torch_model import load_torch_model

AUDIT = Path(cli.__file__).resolve().parent
COMMAND_LINE = {AUDIT / "cli.py", AUDIT / "commands.py"}  # the only modules that know flags
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
# A whole command for the user to type, quoted (`medaudit check --reference PATH`): a command line
# of another command, which the running command cannot map, so it is written out as it is typed.
COMMAND_EXAMPLE = re.compile(r"`medaudit [^`]*`")
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
LOGGERS = {"log", "logger", "logging"}
EXCEPTION_NAME = re.compile(r"(Error|Exception|Refused)$")


def _callee(call: ast.Call) -> tuple[str | None, str | None]:
    """(object, name) of what is called: ``log.warning`` -> ("log", "warning")."""
    func = call.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        return owner, func.attr
    return None, None


def _is_message_call(call: ast.Call, raised: set[int]) -> bool:
    owner, name = _callee(call)
    if id(call) in raised:  # raise X(...)
        return True
    if name and EXCEPTION_NAME.search(name):  # an exception built to be raised or returned
        return True
    if owner == "warnings" and name == "warn":
        return True
    return owner in LOGGERS and name in LOG_METHODS


def _module_strings(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level names bound to text (``EXPORT_HINT = "..."``), for messages that use them."""
    found: dict[str, list[str]] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        value = getattr(node, "value", None)
        texts = [c.value for c in ast.walk(value) if _is_text(c)] if value else []
        for target in targets:
            if isinstance(target, ast.Name) and texts:
                found[target.id] = texts
    return found


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def message_texts(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant, f-string parts included, that an exception or a log
    call is given, directly or through a module-level constant."""
    tree = ast.parse(source)
    constants = _module_strings(tree)
    raised = {id(node.exc) for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc}
    found: list[tuple[int, str]] = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not _is_message_call(call, raised):
            continue
        for argument in [*call.args, *(k.value for k in call.keywords)]:
            for node in ast.walk(argument):
                if _is_text(node):
                    found.append((node.lineno, node.value))
                elif isinstance(node, ast.Name) and node.id in constants:
                    found.extend((node.lineno, text) for text in constants[node.id])
    return found


def domain_modules() -> list[Path]:
    return sorted(p for p in AUDIT.rglob("*.py") if p not in COMMAND_LINE)


def flags_in(text: str) -> list[str]:
    return FLAG.findall(COMMAND_EXAMPLE.sub("", text))


def test_no_domain_message_names_a_flag() -> None:
    offending, scanned = [], 0
    for path in domain_modules():
        for line, text in message_texts(path.read_text(encoding="utf-8")):
            scanned += 1
            if flags_in(text):
                offending.append(f"{path.relative_to(AUDIT.parent)}:{line}: {text!r}")
    assert scanned > 200  # the scan reads the messages, not nothing
    assert not offending, "write the option as `its_name`; the CLI names the flag:\n" + "\n".join(
        offending
    )


def test_the_scan_sees_every_kind_of_message() -> None:
    source = """
HINT = "or pass --hint-flag"
def f(x):
    log.warning("use --log-flag %s", x)
    logger.info(f"{x} needs --fstring-flag")
    error = UsageError("built with --built-flag")
    raise ValueError(f"bad {x}; " + HINT)
"""
    found = {flag for _, text in message_texts(source) for flag in flags_in(text)}
    assert found == {"--hint-flag", "--log-flag", "--fstring-flag", "--built-flag"}
    assert flags_in("give it to `medaudit check --reference PATH`") == []
    assert flags_in("a well-known --xy; not a-b--cd") == ["--xy"]


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    module = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with warnings.catch_warnings():  # torch's deprecation notice for TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(tmp_path / "script.pt"))
    torch.save(module, tmp_path / "whole.pt")
    return {"script": tmp_path / "script.pt", "whole": tmp_path / "whole.pt"}


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("medaudit: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "flag", "wording"),
    [
        (
            ["probe", "{script}", "--modality", "cxr", "--synthetic", "--no-report"],
            "--trust-code",
            "allow it with --trust-code if you trust the file",
        ),
        (["inspect", "{whole}"], "--trust-pickle", "allow it with --trust-pickle if you trust"),
        (
            ["check", "{script}", "--dry-run", "--modality", "cxr", "--data", "nowhere"],
            "--data",
            "the --data path does not exist",
        ),
        (
            ["reference", "fetch", "--url", "http://127.0.0.1/"],
            "--url",
            "--url 'http://127.0.0.1/' does not end in a file name",
        ),
    ],
    ids=["probe-torchscript", "inspect-pickle", "check-data", "reference-url"],
)
def test_the_command_line_names_the_flag_of_a_domain_error(
    models, tmp_path, monkeypatch, capsys, argv: list[str], flag: str, wording: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no settings file from the tree the tests run in
    argv = [a.format(**models) for a in argv]
    if argv[0] in ("probe", "reference"):
        argv += ["--cache-dir", str(tmp_path / "cache")]
    if argv[0] == "probe":
        argv += ["--out", str(tmp_path / "out")]
    line = error_line(argv, capsys)
    assert flag in line and wording in line, line
    assert "`" not in line, line


def test_a_library_caller_reads_the_keyword(models) -> None:
    with pytest.raises(cli.UsageError) as refused:
        load_torch_model(models["script"])
    message = str(refused.value)
    assert "allow it with `trust_code` if you trust the file" in message
    assert not flags_in(message)
