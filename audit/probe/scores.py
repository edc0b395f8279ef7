"""Which number of the model's output is "the score", and on what scale it is read.

``--score-output`` names an output (by name or position) and, after a colon, a column of it:
``logits``, ``1``, ``logits:3``, ``0:3``. Without it the probe reads the first output's only
column, or column 1 of a two-class output; an output with more columns needs a choice.

Scores are compared on the probability scale, because the verdict's ``--max-shift`` is a
difference of probabilities: ``--activation auto`` reads outputs that all lie in [0, 1] as
probabilities, applies a sigmoid to one logit and a softmax to two, and asks for a choice when an
output has more columns (multi-label models want a sigmoid, multi-class ones a softmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audit.errors import UsageError

ACTIVATIONS = ("auto", "none", "sigmoid", "softmax")


@dataclass(frozen=True)
class ScoreChoice:
    """One column of one output; ``column`` None: the output has one value per image."""

    output_index: int
    output_name: str
    column: int | None
    n_columns: int


def _parse(text: str | None) -> tuple[str | None, int | None]:
    if text is None or not text.strip():
        return None, None
    output, colon, column = text.strip().rpartition(":") if ":" in text else (text, "", "")
    if not colon:
        return text.strip(), None
    try:
        return (output or None), int(column)
    except ValueError:
        raise UsageError(
            f"`score_output` {text!r}: the part after ':' must be a column number, e.g. logits:1"
        ) from None


def choose_score(
    text: str | None, outputs: Sequence[tuple[str, tuple[int, ...]]], model_name: str
) -> ScoreChoice:
    """Resolve ``--score-output`` against the outputs' names and shapes (from a trial batch)."""
    output, column = _parse(text)
    names = [name for name, _ in outputs]
    listed = ", ".join(f"{i}: {n} {list(s)}" for i, (n, s) in enumerate(outputs))
    if output is None:
        index = 0
    elif output in names:
        index = names.index(output)
    elif output.isdigit() and int(output) < len(outputs):
        index = int(output)
    else:
        raise UsageError(
            f"`score_output` {text!r}: {model_name} has no such output; its outputs are {listed}"
        )
    name, shape = outputs[index]
    if len(shape) == 1 or (len(shape) == 2 and shape[1] >= 1):
        n_columns = 1 if len(shape) == 1 else int(shape[1])
    else:
        raise UsageError(
            f"output {name!r} of {model_name} has shape {list(shape)}; the probe reads one score "
            "per image, from an output of shape (batch,) or (batch, classes)"
        )
    return ScoreChoice(index, name, _column(column, n_columns, name, len(shape), model_name),
                       n_columns)  # fmt: skip


def _column(column: int | None, n_columns: int, name: str, rank: int, model: str) -> int | None:
    if column is None:
        if rank == 1:
            return None
        if n_columns <= 2:
            return n_columns - 1
        raise UsageError(
            f"output {name!r} of {model} has {n_columns} columns; choose the finding's with "
            f"`score_output` {name}:COLUMN (0 to {n_columns - 1})"
        )
    if rank == 1 or not 0 <= column < n_columns:
        raise UsageError(
            f"`score_output` column {column}: output {name!r} has "
            f"{'no columns' if rank == 1 else f'columns 0 to {n_columns - 1}'}"
        )
    return column


def raw_rows(choice: ScoreChoice, outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The chosen output of one batch as float64 (B, K): all columns, for a softmax."""
    values = np.asarray(outputs[choice.output_index], dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


@dataclass(frozen=True)
class Activation:
    name: str  # none | sigmoid | softmax
    reason: str
    probabilities: bool = (
        True  # False only for raw scores the user asked to keep (--activation none)
    )


def choose_activation(requested: str, raw: np.ndarray, choice: ScoreChoice) -> Activation:
    """The scale the scores are read on; ``raw`` is the clean images' (N, K) output."""
    if requested not in ACTIVATIONS:
        raise UsageError(f"`activation` {requested!r}; use one of {', '.join(ACTIVATIONS)}")
    if requested != "auto":
        return Activation(requested, "given by --activation", requested != "none")
    if not np.all(np.isfinite(raw)):
        raise UsageError(f"output {choice.output_name!r} holds NaN or infinite values")
    if raw.min() >= 0.0 and raw.max() <= 1.0:
        return Activation("none", "every output lies in [0, 1]: read as probabilities")
    if choice.n_columns == 1:
        return Activation("sigmoid", "one output value outside [0, 1]: read as a logit")
    if choice.n_columns == 2:
        return Activation("softmax", "two output values outside [0, 1]: read as class logits")
    raise UsageError(
        f"output {choice.output_name!r} has {choice.n_columns} columns of logits; say how they "
        "become a probability: `activation` sigmoid (multi-label) or softmax (multi-class)"
    )


def to_scores(raw: np.ndarray, choice: ScoreChoice, activation: Activation) -> np.ndarray:
    """(N, K) raw rows -> (N,) scores of the chosen column on the chosen scale."""
    column = choice.column or 0
    if activation.name == "softmax":
        shifted = raw - raw.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp[:, column] / exp.sum(axis=1)
    values = raw[:, column]
    if activation.name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * values))  # a sigmoid that cannot overflow
    return values
