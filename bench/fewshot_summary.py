"""bench/fewshot.py's summary: accuracy and seconds per size and contender, ``auto`` minus SetFit
paired by seed, and the results file (rewritten after every size and seed)."""

from __future__ import annotations

import json

import numpy as np

from bench.paths import invocation

ORDER = [
    "setfit",
    "auto",
    "linear-probe",
    "lp-ft",
    "contrastive-head",
    "contrastive",
    "contrastive+sklearn-lr",
    "linear-probe-adamw",
    "contrastive-head-adamw",
]


def summarise(results: list[dict], sizes: list[int]) -> list[dict]:
    table = []
    for per_class in sizes:
        for contender in ORDER:
            rows = [r for r in results if r["per_class"] == per_class and r["contender"] == contender]
            if not rows:
                continue
            acc, secs = np.array([r["accuracy"] for r in rows]), np.array([r["seconds"] for r in rows])
            table.append(
                {
                    "per_class": per_class,
                    "contender": contender,
                    "runs": len(rows),
                    "accuracy_mean": float(acc.mean()),
                    "accuracy_std": float(acc.std()),
                    "seconds_mean": float(secs.mean()),
                }
            )
    return table


def paired_gaps(results: list[dict], sizes: list[int], against: str = "setfit") -> dict:
    """Per size: ``auto`` minus ``against`` on the same rows (seeds where both ran): mean, std
    and a 95 % confidence interval (Student's t): the seed-to-seed spread of either contender
    (about 5 points at 8 per class) is mostly the rows drawn, which both see."""
    from scipy import stats

    gaps = {}
    for per_class in sizes:
        scores = {
            (r["contender"], r["seed"]): r["accuracy"]
            for r in results
            if r["per_class"] == per_class and r["contender"] in ("auto", against)
        }
        seeds = sorted({seed for (_, seed) in scores if ("auto", seed) in scores and (against, seed) in scores})
        if len(seeds) < 2:
            continue
        diff = np.array([scores[("auto", s)] - scores[(against, s)] for s in seeds])
        half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
        gaps[per_class] = {
            "seeds": len(seeds),
            "mean": float(diff.mean()),
            "std": float(diff.std(ddof=1)),
            "ci95": [float(diff.mean()) - half, float(diff.mean()) + half],
            "auto_wins": int((diff > 0).sum()),
            "ties": int((diff == 0).sum()),
        }
    return gaps


def report(
    results: list[dict], args, machine: dict, about: str, final: bool = False, command: str | None = None
) -> tuple[list[dict], dict]:
    """The table (printed when ``final``) and the JSON file, rewritten after every size and seed
    so that a run cut short still leaves what it measured."""
    table = summarise(results, args.per_class)
    gaps = paired_gaps(results, args.per_class)
    ratios = {}
    for per_class in args.per_class:
        means = {r["contender"]: r for r in table if r["per_class"] == per_class}
        if "auto" in means and "setfit" in means:
            ratios[per_class] = means["auto"]["seconds_mean"] / means["setfit"]["seconds_mean"]
    if final:
        print(f"\n{'per class':>9} {'contender':>16} {'runs':>4} {'accuracy':>17} {'seconds':>8}")
        for row in table:
            print(
                f"{row['per_class']:>9} {row['contender']:>16} {row['runs']:>4} "
                f"{row['accuracy_mean']:>8.4f} ± {row['accuracy_std']:.4f} {row['seconds_mean']:>8.1f}"
            )
        for per_class, ratio in ratios.items():
            print(f"{per_class} per class: auto/setfit seconds {ratio:.2f}")
        for per_class, gap in gaps.items():
            low, high = gap["ci95"]
            print(
                f"{per_class} per class: auto - setfit {gap['mean'] * 100:+.2f} points over {gap['seeds']} paired "
                f"seeds (95 % CI {low * 100:+.2f} to {high * 100:+.2f}; auto ahead on {gap['auto_wins']})"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "cpu": machine,
        "precision": {"ours": args.precision, "setfit": "fp32"},
        "data": about,
        "command": command or invocation("bench.fewshot"),
        "complete": final,
        "table": table,
        "auto_over_setfit_seconds": ratios,
        "auto_minus_setfit_paired": gaps,
        "results": results,
    }
    args.out.write_text(json.dumps(summary, indent=2))
    return table, ratios
