"""The tables ``bench.pages`` builds from results files: one function per kind of results file,
each taking ``[(file name, data), ...]`` and returning rows of cells, the header first."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

Files = list[tuple[str, dict]]
Rows = list[list[str]]
NOT_RECORDED = "not recorded"


def num(value: object, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def points(value: object) -> str:
    return "—" if value is None else f"{100 * value:+.1f}" if abs(value) < 1 else f"{value:+.1f}"


def code(name: str) -> str:
    return f"`{name}`"


def machine_of(data: dict) -> dict:
    for key in ("machine", "machine_before", "cpu"):
        if isinstance(data.get(key), dict):
            return data[key]
    return {}


def load_of(data: dict, machine: dict) -> str:
    load = machine.get("load") or machine.get("load_average") or data.get("load_average") or machine.get("uptime")
    if isinstance(load, list):
        return " ".join(f"{x:.2f}" for x in load)
    if isinstance(load, str) and "load average:" in load:
        return load.split("load average:")[1].strip().replace(",", "")
    return load or NOT_RECORDED


def provenance(files: Files) -> Rows:
    """File, command, machine, CPU flags and load of each results file."""
    rows = [["file", "command", "machine", "CPU flags", "load"]]
    for name, data in files:
        given, machine = data.get("provenance", {}), machine_of(data)
        model = machine.get("model") or machine.get("cpu") or given.get("machine", NOT_RECORDED)
        cores = f"{machine['cores']} cores, " if machine.get("cores") else ""
        flags = machine.get("flags") or given.get("cpu_flags", NOT_RECORDED)
        flags = " ".join(flags) if isinstance(flags, list) else flags
        command = data.get("command") or given.get("command", NOT_RECORDED)
        command = command if command.startswith(NOT_RECORDED) else code(command)
        rows.append([code(name), command, f"{cores}{model}", flags, load_of(data, machine)])
    return rows


def budget(files: Files) -> Rows:
    """Equal wall clock: HF Trainer and ours each given the same minutes on the full SST-2 train set."""
    rows = [["file", "min", "seed", "precision", "HF acc.", "ours acc.", "ours − HF (points)", "HF samples"]]
    rows[0] += ["ours stage-2 samples", "ours stage-2 samples/s", "ours frozen stage (s)", "ours in all (s)"]
    for name, d in files:
        seed = d.get("seed", (d.get("overrides") or {}).get("seed", 42 if "overrides" in d else None))
        rows.append(
            [code(name), num(d["minutes"], "g"), num(seed, "d"), d.get("precision_both", "bf16")]
            + [num(d["hf_accuracy"]), num(d["ours_accuracy"]), f"{d['points_gained']:+.1f}"]
            + [num(d["hf_samples_seen"], ",.0f"), num(d.get("ours_stage2_samples_seen"), ",.0f")]
            + [num(d.get("ours_stage2_samples_per_second"), ".0f"), num(d.get("ours_frozen_seconds"), ".0f")]
            + [num(d["ours_seconds"], ".0f")]
        )
    return rows


def freeze_summary(files: Files) -> Rows:
    """`bench.engine freeze`: per precision and N frozen blocks, the mean over seeds."""
    rows = [["file", "overrides", "precision", "N frozen", "token rows", "test acc. mean (min–max)", "seeds"]]
    rows[0] += ["stage-2 samples/s", "× HF", "× HF after epoch 1", "MFU"]
    for name, d in files:
        overrides = {k: v for k, v in (d.get("overrides") or {}).items() if v}
        for s in d.get("summary", []):
            spread = f"{num(s['accuracy_mean'])} ({num(s['accuracy_min'])}–{num(s['accuracy_max'])})"
            tokens = "frozen" if s.get("freeze_word_embeddings") else s.get("token_matrix", "all")
            rows.append(
                [code(name), code(json.dumps(overrides)) if overrides else "—", s["precision"]]
                + [str(s["freeze_layers"]), tokens, spread, str(s["seeds"])]
                + [num(s["samples_per_second"], ".1f"), num(s.get("vs_hf"), ".2f")]
                + [num(s.get("after_first_vs_hf"), ".2f"), num(s.get("mfu"), ".0%")]
            )
    return rows


def freeze_runs(files: Files) -> Rows:
    """`bench.engine freeze`: one row per run (seed, precision, N)."""
    rows = [
        ["file", "seed", "precision", "N", "test acc.", "stage-2 samples/s", "stage-2 epochs (s)", "cache pass (s)"]
    ]
    rows[0] += ["× HF", "× HF after epoch 1"]
    for name, d in files:
        for r in d["runs"]:
            epochs = ", ".join(num(e, ".1f") for e in r.get("epoch_seconds") or [])
            rows.append(
                [code(name), str(r["seed"]), r["precision"], str(r["freeze_layers"]), num(r["accuracy"])]
                + [num(r["stage2_samples_per_second"], ".1f"), epochs or "—", num(r.get("layer_cache_seconds"), ".1f")]
                + [num(r.get("vs_hf_same_precision"), ".2f"), num(r.get("after_first_vs_hf"), ".2f")]
            )
    return rows


def hf_runs(files: Files) -> Rows:
    """HF Trainer (run_glue defaults, grouped by length) as `bench.engine freeze` ran it."""
    rows = [["file", "precision", "seed", "when", "samples/s", "test acc."]]
    for name, d in files:
        for key in ("hf", "hf_fp32", "hf_bf16"):
            runs = d.get(key) or []
            for r in runs if isinstance(runs, list) else [runs]:
                precision = r.get("precision", key.removeprefix("hf_") if key != "hf" else "—")
                rows.append([code(name), precision, num(r.get("seed"), "d"), r.get("when", "—")])
                rows[-1] += [num(r["samples_per_second"], ".1f"), num(r["accuracy"])]
    return rows


def fewshot(files: Files) -> Rows:
    """`bench.fewshot`: test accuracy mean ± std over seeds, and seconds to train, per contender."""
    rows = [["file", "per class", "contender", "runs", "test acc. mean ± std", "seconds (mean)"]]
    for name, d in files:
        for r in d["table"]:
            spread = f"{num(r['accuracy_mean'])} ± {num(r['accuracy_std'])}"
            rows.append([code(name), str(r["per_class"]), r["contender"], str(r["runs"]), spread])
            rows[-1].append(num(r["seconds_mean"], ".1f"))
    return rows


def fewshot_gaps(files: Files) -> Rows:
    """`bench.fewshot`: ``auto`` minus SetFit, paired by seed (points), and the ratio of seconds."""
    rows = [["file", "per class", "seeds", "auto − SetFit (points)", "95 % interval", "seeds auto ahead", "seconds ×"]]
    for name, d in files:
        for size, gap in (d.get("auto_minus_setfit_paired") or {}).items():
            low, high = gap["ci95"]
            seconds = (d.get("auto_over_setfit_seconds") or {}).get(size)
            rows.append([code(name), size, str(gap["seeds"]), points(gap["mean"]), f"{points(low)} to {points(high)}"])
            rows[-1] += [str(gap["auto_wins"]), num(seconds, ".2f")]
    return rows


def task_runs(files: Files) -> Rows:
    """`bench.task_kinds`: each contender's test metrics on the same rows."""
    metrics = ["accuracy", "f1_macro", "f1_micro", "subset_accuracy", "roc_auc_macro"]
    rows = [["file", "contender", *metrics, "train (s)"]]
    for name, d in files:
        contenders = [(k, v) for k, v in d.items() if k.startswith(("ours", "hf_bce", "frozen_ovr"))]
        contenders += [(f"hf_trainer seed {r.get('seed', '—')}", r) for r in d.get("hf_trainer_runs") or []]
        for contender, result in contenders:
            values = [num(result["metrics"].get(m)) for m in metrics]
            rows.append([code(name), contender, *values, num(result.get("train_seconds"), ".0f")])
    return rows


def full_runs(files: Files) -> Rows:
    """`bench.engine full`: the default recipe on the full SST-2 train set."""
    rows = [["file", "test acc.", "seconds", "stage-2 samples/s", "best epoch", "validation by epoch"]]
    for name, d in files:
        history = " → ".join(num(v) for v in d["val_history"])
        rows.append([code(name), num(d["accuracy"]), num(d["seconds"], ",.0f")])
        rows[-1] += [num(d["unfrozen_samples_per_second"], ".1f"), str(d["best_epoch"]), history]
    return rows


def levers(files: Files) -> Rows:
    """`bench.engine_levers`: samples/s of the same batches per variant, best and median of rounds."""
    rows = [["file", "variant", "rounds", "best samples/s", "median samples/s"]]
    for name, d in files:
        for variant, result in d["train"].items():
            rounds = sorted(result["rounds"])
            middle = len(rounds) // 2
            median = rounds[middle] if len(rounds) % 2 else (rounds[middle - 1] + rounds[middle]) / 2
            rows.append([code(name), variant, str(len(rounds)), num(result["best"], ".1f"), num(median, ".1f")])
    return rows


def values(files: Files) -> Rows:
    """Every number a file holds (lists of up to 8 numbers in one cell), for files of their own kind."""
    rows = [["file", "quantity", "value"]]
    for name, d in files:
        for path, value in _leaves(d, ()):
            rows.append([code(name), " / ".join(path), value])
    return rows


def records(files: Files) -> Rows:
    """A file's own summary table (its ``table`` key: one record a row), as it wrote it."""
    columns = list(dict.fromkeys(key for _, d in files for record in d["table"] for key in record))
    rows = [["file", *columns]]
    for name, d in files:
        for record in d["table"]:
            rows.append([code(name), *(num(record.get(c), ".4g") if c in record else "—" for c in columns)])
    return rows


def startup(files: Files) -> Rows:
    """`bench.startup`: median wall (and CPU) seconds from launch to each phase, per repository."""
    phases = ["flow run begins", "validate-data done", "frozen stage starts", "first training step"]
    rows = [["file", "repository", "server", *(f"{phase}: wall (CPU) s" for phase in phases)]]
    for name, d in files:
        for repo, seconds in d["median_seconds"].items():
            cells = [f"{num(seconds['wall'].get(p), '.1f')} ({num(seconds['cpu'].get(p), '.1f')})" for p in phases]
            rows.append([code(name), code(repo), str(d.get("server", "—")), *cells])
    return rows


def best_seconds(files: Files) -> Rows:
    """`bench.eval_batches`: the best of the rounds, seconds, one row per pass, one column per batching."""
    rows: Rows = []
    for name, d in files:
        settings = list(dict.fromkeys(setting for by_setting in d["seconds"].values() for setting in by_setting))
        rows = rows or [["file", "pass", *settings]]
        for one_pass, by_setting in d["seconds"].items():
            cells = [num(by_setting[s]["best"], ".3f") if s in by_setting else "—" for s in settings]
            rows.append([code(name), one_pass, *cells])
    return rows


SKIPPED_KEYS = {"rounds", "provenance", "machine", "machine_before", "machine_after", "cpu", "command", "args", "note"}


def _leaves(data: object, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(data, dict):
        return [leaf for k, v in data.items() if k not in SKIPPED_KEYS for leaf in _leaves(v, (*path, str(k)))]
    if isinstance(data, list) and data and all(isinstance(v, int | float) for v in data) and len(data) <= 8:
        return [(path, ", ".join(num(v, ".4g") for v in data))]
    if isinstance(data, list):
        return [leaf for i, v in enumerate(data) for leaf in _leaves(v, (*path, str(i)))]
    if isinstance(data, bool) or not isinstance(data, int | float):
        return [(path, str(data))] if isinstance(data, str | bool) and len(str(data)) < 60 else []
    return [(path, num(data, ".4g"))]


def sweeps(files: Files) -> Rows:
    """`bench.tune`: per seed, test accuracy and wall seconds of our sweep, HF Trainer's search, the default recipe."""
    rows = [["file", "data", "train rows", "seed", "budget min", "ours acc.", "HF acc.", "default acc."]]
    rows[0] += ["ours − HF", "ours − default", "ours s", "HF s", "ours trials (pruned)"]
    rows[0] += ["unpruned acc.", "trial s pruned / unpruned"]
    for name, d in files:
        for r in (r for r in d["runs"] if "hf" in r):  # `--pruning-only` runs: the `pruning` table
            ours, hf, default, unpruned = r["ours"], r["hf"], r.get("default"), r.get("unpruned")
            trials = f"{ours['trials'].get('done', 0)} ({ours['trials'].get('pruned', 0)})"
            given = "".join(f" (ours: `{s}`)" for s in d.get("ours_set", []))  # `bench.tune --set`
            cells = [code(name), d["dataset"] + given, _train_rows(d), num(r["seed"], "d"), num(d["minutes"], "g")]
            cells += [num(ours["test_accuracy"]), num(hf["test_accuracy"])]
            cells += [num(default["test_accuracy"]) if default else "—"]  # `--skip-default`
            cells += [points(ours["test_accuracy"] - hf["test_accuracy"])]
            cells += [points(ours["test_accuracy"] - default["test_accuracy"]) if default else "—"]
            cells += [num(ours["wall_seconds"], ".0f"), num(hf["wall_seconds"], ".0f"), trials]
            cells += [num(unpruned["test_accuracy"]) if unpruned else "—"]
            ratio = unpruned and ours["trial_seconds"] / max(unpruned["trial_seconds"], 1e-9)
            cells += [
                f"{num(ours['trial_seconds'], '.0f')} / {num(unpruned['trial_seconds'], '.0f')} ({num(ratio, '.2f')})"
                if unpruned
                else "—"
            ]
            rows.append(cells)
    return rows


def _train_rows(d: dict) -> str:
    """`bench.tune --rows`: the seeded sample of train rows, or ``all`` (``--rows 0``)."""
    return f"{d['rows']:,}" if d["rows"] else "all"  # every `bench.tune` file records it: none is "all" by default


def pruning(files: Files) -> Rows:
    """`bench.tune` paired runs: the pruned sweep, and the same points unpruned (``paired_unpruned``)."""
    rows = [["file", "data", "seed", "pruner hears", "trials (pruned)", "trial s pruned / unpruned", "saved"]]
    rows[0] += ["best val. pruned", "best val. unpruned", "same winner", "test pruned", "test unpruned"]
    for name, d in files:
        for r in (r for r in d["runs"] if r.get("unpruned", {}).get("paired") is not None):
            ours, unpruned = r["ours"], r["unpruned"]
            pruned = sum(t["state"] == "pruned" for t in ours["trial_list"])
            cells = [code(name), d["dataset"], num(r["seed"], "d"), _pruner_signal(d)]
            cells += [f"{len(ours['trial_list'])} ({pruned})"]
            cells += [f"{num(ours['trial_seconds'], '.0f')} / {num(unpruned['trial_seconds'], '.0f')}"]
            cells += [f"{1 - ours['trial_seconds'] / unpruned['trial_seconds']:.0%}"]
            cells += [num(ours["best_validation"]), num(unpruned["best_validation"])]
            cells += ["yes" if ours["best_params"] == unpruned["best_params"] else "no"]
            cells += [num(ours["test_accuracy"]), num(unpruned["test_accuracy"])]
            rows.append(cells)
    return rows


def _pruner_signal(result: dict) -> str:
    """What the pruned sweep's pruner heard: recorded since 2026-12-05; before, only a ``--prune-on loss``
    command pruned on the loss (``--points-from`` files copy a sweep pruned on accuracy)."""
    signal = result.get("prune_on") or ("loss" if "--prune-on loss" in result.get("command", "") else "metric")
    return "validation loss" if signal == "loss" else "validation accuracy"


TABLES: dict[str, Callable[[Files], Rows]] = {
    "budget": budget,
    "freeze-summary": freeze_summary,
    "freeze-runs": freeze_runs,
    "hf-runs": hf_runs,
    "fewshot": fewshot,
    "fewshot-gaps": fewshot_gaps,
    "tasks": task_runs,
    "full": full_runs,
    "levers": levers,
    "values": values,
    "records": records,
    "startup": startup,
    "best-seconds": best_seconds,
    "sweeps": sweeps,
    "pruning": pruning,
}
