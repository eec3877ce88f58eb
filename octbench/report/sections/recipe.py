"""``## Method``: how each run group was trained, read from its records (never assumed).

A linear probe with mixup and a cosine schedule must not read like plain end-to-end training,
so every row names the mode, augmentations, schedule, optimiser, epochs actually trained,
where the weights came from (with the loaded / adapted / new tensor counts when the record has
them), precision and device; then the bootstrap's resampling scheme.
"""

from __future__ import annotations

from collections.abc import Sequence

from octbench.report.collect import GroupKey, ReportData, Run, group_runs
from octbench.report.markdown import bootstrap_scheme, md_code, md_escape, md_table


def recipe_section(data: ReportData) -> list[str]:
    """The section's lines: one table row per (model, strategy, setup)."""
    out = ["## Method: how each group was trained", ""]
    groups = group_runs(data.runs)
    if not groups:
        return out + ["n/a: no complete run."]
    rows = [_row(key, runs) for key, runs in groups.items()]
    out.append(md_table(["Model / strategy (setup)", "Mode", "Augmentations", "Optimiser",
                         "Schedule", "Epochs trained", "Weights", "Precision · device"], rows,
                        align=["l"] * 8))
    out += ["", "Read from each group's run records: *epochs trained* is what ran (early "
            "stopping can end a run before its configured epochs), *weights* where the "
            "initial weights came from, with the tensors loaded from the file, adapted to "
            "the input (e.g. the stem for 1 channel) and newly initialised (e.g. the head) "
            "when the record has them.", "",
            f"**Bootstrap resampling:** {bootstrap_scheme(data)}"]
    return out


def _row(key: GroupKey, runs: Sequence[Run]) -> list[str]:
    model, strategy, setup = key
    train = [(r.record.config or {}).get("train") or {} for r in runs]
    epochs = sorted({r.record.epochs_trained for r in runs})
    configured = sorted({t.get("epochs") for t in train if t.get("epochs") is not None})
    trained = (f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}") + (
        f" of {configured[0]}" if len(configured) == 1 else "")
    return [f"{md_escape(model)} / {md_escape(strategy)} ({md_escape(setup)})",
            _same(t.get("mode", "end_to_end") for t in train),
            _same(_augmentations(t.get("augment") or []) for t in train),
            _same(f"{t.get('optimizer', 'adam')} lr {t.get('lr', 1e-3):g}"
                  + (f", wd {t['weight_decay']:g}" if t.get("weight_decay") else "")
                  for t in train),
            _same(_schedule(t) for t in train),
            trained,
            _same(_weights(r.record.model_init or {}) for r in runs),
            _same((f"{md_escape(r.record.precision)} · {md_code(r.record.device)}"
                   for r in runs), escape=str)]


def _same(values, escape=md_escape) -> str:
    """One value when every run agrees, else all of them (a mixed group is worth seeing)."""
    found = [escape(v) for v in dict.fromkeys(values)]
    return found[0] if len(found) == 1 else "mixed: " + "; ".join(found)


def _augmentations(augment: list) -> str:
    if not augment:
        return "none"
    def one(a) -> str:
        if isinstance(a, str):
            return a
        params = ", ".join(f"{k}={v}" for k, v in a.items() if k != "name")
        return f"{a.get('name')}({params})" if params else str(a.get("name"))

    return ", ".join(one(a) for a in augment)


def _schedule(train: dict) -> str:
    schedule = train.get("schedule", "none")
    if schedule == "step":
        return f"step ×{train.get('step_gamma', 0.1):g} every {train.get('step_every', 5)}"
    patience = train.get("patience")
    return schedule + (f", early stop after {patience}" if patience else "")


def _weights(init: dict) -> str:
    weights = init.get("weights", "random")
    if weights == "random":
        return "random (from scratch)"
    source = init.get("source") or weights
    text = f"pretrained: {source}" if weights != "timm" else f"pretrained (timm): {source}"
    counts = []
    for key, word in (("loaded_tensors", "loaded"), ("adapted_tensors", "adapted"),
                      ("new_tensors", "new")):
        value = init.get(key)
        if value is not None:
            counts.append(f"{len(value) if isinstance(value, list) else value} {word}")
    details = [f"{', '.join(counts)} tensors"] if counts else []
    if init.get("file_sha256"):
        details.append(f"sha256 {str(init['file_sha256'])[:12]}…")
    return text + (f" ({'; '.join(details)})" if details else "")
