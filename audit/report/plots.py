"""Vector plots for the report, in the report's fixed colours."""

from __future__ import annotations

import io
from typing import Any

ROLE_COLOURS = {"user": "#c0392b", "reference": "#1f5fa8", "random-init": "#7f8c8d"}
ROLE_LABELS = {"user": "audited model", "reference": "reference", "random-init": "random init"}


def auc_curves_svg(confounder_auc: dict[str, Any], levels: list[float], title: str) -> str:
    """o.o.d. (solid) and i.i.d. (dashed) AUC against correlation level, mean +- sd over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for role, sets in confounder_auc.items():
        colour = ROLE_COLOURS.get(role, "black")
        for set_name, style in (("ood", "-"), ("iid", "--")):
            if set_name not in sets:
                continue
            mean = [m if m is not None else float("nan") for m in sets[set_name]["mean"]]
            sd = [s if s is not None else 0.0 for s in sets[set_name]["sd"]]
            label = f"{ROLE_LABELS.get(role, role)}, {'o.o.d.' if set_name == 'ood' else 'i.i.d.'}"
            ax.plot(levels, mean, style, color=colour, marker="o", markersize=3, label=label)
            low = [m - s for m, s in zip(mean, sd, strict=True)]
            high = [m + s for m, s in zip(mean, sd, strict=True)]
            ax.fill_between(levels, low, high, color=colour, alpha=0.12, linewidth=0)
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlabel("correlation level p (fraction of positives carrying the confounder)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left", frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    return buffer.getvalue()
