"""When a candidate should replace the production model of its stream (the seed's rule).

A candidate is **recommended** when, on its own validation rows against the production
model's recorded validation metrics:

- its AUC beats production's by at least ``AUTO_PROMOTE_MIN_AUC_IMPROVE`` (relative, default
  0.01: ``auc_c >= auc_p * 1.01``), and
- its Brier score is at most ``AUTO_PROMOTE_MAX_BRIER_DEGRADE`` worse (relative, default 0.0:
  ``brier_c <= brier_p * (1 + x)``), and
- its ECE is at most ``AUTO_PROMOTE_MAX_ECE_DEGRADE`` worse (absolute, default 0.01:
  ``ece_c <= ece_p + x``).

With no production model a candidate with a defined AUC is recommended (the stream needs one).
Each failed rule is a reason, with both numbers, so a promotion event says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PromotionRules:
    min_auc_improve: float = 0.01
    max_brier_degrade: float = 0.0
    max_ece_degrade: float = 0.01

    @classmethod
    def from_settings(cls, s: Any) -> PromotionRules:
        """AUTO_PROMOTE_MIN_AUC_IMPROVE, AUTO_PROMOTE_MAX_BRIER_DEGRADE, AUTO_PROMOTE_MAX_ECE_DEGRADE."""
        return cls(
            s.auto_promote_min_auc_improve, s.auto_promote_max_brier_degrade, s.auto_promote_max_ece_degrade
        )


@dataclass(frozen=True, slots=True)
class Recommendation:
    recommended: bool
    reasons: list[str] = field(default_factory=list)


def recommend(
    candidate: dict[str, Any], production: dict[str, Any] | None, rules: PromotionRules
) -> Recommendation:
    """``candidate``/``production``: validation metrics (``auc``, ``brier``, ``ece``)."""
    auc_c = candidate.get("auc")
    if auc_c is None:
        return Recommendation(False, ["candidate AUC is undefined (one class in its validation rows)"])
    if production is None:
        return Recommendation(True, ["no production model for the stream"])
    reasons: list[str] = []
    ok = True
    auc_p = production.get("auc")
    if auc_p is not None:
        need = auc_p * (1 + rules.min_auc_improve)
        if auc_c < need:
            ok = False
            reasons.append(
                f"AUC {auc_c:.4f} < {need:.4f} (production {auc_p:.4f} + {rules.min_auc_improve:.1%})"
            )
        else:
            reasons.append(
                f"AUC {auc_c:.4f} >= {need:.4f} (production {auc_p:.4f} + {rules.min_auc_improve:.1%})"
            )
    brier_max = production["brier"] * (1 + rules.max_brier_degrade)
    if candidate["brier"] > brier_max:
        ok = False
        reasons.append(f"Brier {candidate['brier']:.5f} > allowed {brier_max:.5f}")
    ece_max = production["ece"] + rules.max_ece_degrade
    if candidate["ece"] > ece_max:
        ok = False
        reasons.append(f"ECE {candidate['ece']:.4f} > allowed {ece_max:.4f}")
    return Recommendation(ok, reasons)
