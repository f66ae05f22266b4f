"""What the KD balance measured and decided (:mod:`yolokd.engine.balance`): per-term values and gradient norms, each
method's share and scale; saved as ``kd_balance.json`` / ``.md`` and in ``kd_state.pt`` (reused on resume).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GT_TOTAL = "gt_total"


@dataclass
class TermBalance:
    """One measured quantity: its mean value per batch and the mean L2 norm of its gradient on the student.

    ``grad_norm`` is None where it was not measured (the per-epoch update measures only what the scales need).
    """

    value: float
    grad_norm: float | None


@dataclass
class MethodBalance:
    """One method (loss module): its gradient share of the GT loss's before and after its scale."""

    terms: list[str]
    grad_norm: float
    measured_share: float
    grad_share: float | None  # None: the method's own normalisation sets its size (scale 1)
    scale: float
    concentration: float | None = None  # layer_concentration(); None where not measured (the per-epoch update)
    layer_share: float | None = None  # the cap on its pull per layer (``layer_share``); None: no cap
    layer_pull: float | None = None  # layer_pull() at scale 1; None where no conv layer is reached by it and the GT
    hardest_layers: list[list[Any]] = field(default_factory=list)  # hardest_pulled(): [name, method, GT norm]


@dataclass
class BalanceReport:
    """Everything the balance step measured and decided; saved as ``kd_balance.json`` / ``.md`` and in kd_state."""

    weight_mode: str
    batches: int
    gt: dict[str, TermBalance]
    terms: dict[str, TermBalance]
    methods: dict[str, MethodBalance] = field(default_factory=dict)

    @property
    def scales(self) -> dict[str, float]:
        """Frozen scale of each method (1.0 in paper mode)."""
        return {name: method.scale for name, method in self.methods.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BalanceReport:
        return cls(
            weight_mode=data["weight_mode"],
            batches=data["batches"],
            gt={k: TermBalance(**v) for k, v in data["gt"].items()},
            terms={k: TermBalance(**v) for k, v in data["terms"].items()},
            methods={k: MethodBalance(**v) for k, v in data["methods"].items()},
        )

    def markdown(self) -> str:
        """Two tables: every term next to the GT components, then each method's share and scale."""
        gt_grad = self.gt[GT_TOTAL].grad_norm
        lines = [
            f"KD balance over the first {self.batches} batches (weight_mode: {self.weight_mode}); gradient norms on "
            "the student's parameters, shares relative to the whole GT loss's.",
            "",
            "| term | value / batch | grad norm | grad share of GT |",
            "|---|---:|---:|---:|",
        ]
        for name, term in {**self.gt, **self.terms}.items():
            if term.grad_norm is None:
                lines.append(f"| {name} | {term.value:.4g} | - | - |")
                continue
            share = term.grad_norm / gt_grad if gt_grad > 0 else math.nan
            lines.append(f"| {name} | {term.value:.4g} | {term.grad_norm:.4g} | {share:.3g} |")
        lines += [
            "",
            "| method | terms | share at paper weights | target share | layer cap | scale | share after scaling "
            "| layer pull after scaling (q90) | layer concentration (q90) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, method in self.methods.items():
            concentration = _number(method.concentration)
            target = "own scale" if method.grad_share is None else f"{method.grad_share:.3g}"
            pull = "-" if method.layer_pull is None else f"{method.layer_pull * method.scale:.3g}"
            lines.append(
                f"| {name} | {', '.join(method.terms)} | {method.measured_share:.3g} | {target} | "
                f"{_number(method.layer_share)} | {method.scale:.4g} | {method.measured_share * method.scale:.3g} | "
                f"{pull} | {concentration} |"
            )
        lines += [
            "",
            "Layer concentration: over the conv layers a method reaches, the 90th percentile of (its gradient norm / "
            "the GT loss's) on one layer, divided by the same ratio over the whole student; about 1 when the method "
            "pulls every layer as the GT loss does, large when its pull is concentrated near the features it reads "
            "(yolokd.losses.base.FEATURE_GRAD_SHARE). Layer pull: the same 90th percentile, not divided, over the "
            "layers both reach; a method with a layer cap (``layer_share``, off by default) is scaled so it is at most "
            "the cap.",
        ]
        hardest = {name: method.hardest_layers for name, method in self.methods.items() if method.hardest_layers}
        if hardest:
            title = "layers it pulls hardest next to the GT loss: method / GT gradient norm, at scale 1"
            lines += ["", f"| method | {title} |", "|---|---|"]
            for name, layers in hardest.items():
                shown = "; ".join(f"{layer} {kd:.3g} / {gt:.3g}" for layer, kd, gt in layers)
                lines.append(f"| {name} | {shown} |")
            lines.append(
                "A GT norm near 0 is a layer the detection loss does not train (a head level with no positive): there "
                "the method's gradient is the only pull."
            )
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``kd_balance.json`` and ``kd_balance.md`` into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "kd_balance.json", folder / "kd_balance.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        md_path.write_text(self.markdown())
        return json_path, md_path


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


__all__ = ["GT_TOTAL", "BalanceReport", "MethodBalance", "TermBalance"]
