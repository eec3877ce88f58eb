"""Published OCTMNIST results (``report/published.yaml``): beside ours only when trained the same
way, apart (with how they differ) otherwise, never beside synthetic data."""

from __future__ import annotations

import pandas as pd

from octbench.report.collect import ReportData, group_runs
from octbench.report.markdown import fmt, md_escape, md_names, md_table, synthetic_octmnist
from octbench.report.published import protocol_differences, published


def published_section(data: ReportData, table: pd.DataFrame) -> list[str]:
    """Published OCTMNIST results: beside ours when trained the same way, else apart."""
    sizes = data.real_octmnist_sizes
    names = {r.dataset.get("name") for r in data.records}
    if not synthetic_octmnist(data) and "octmnist" not in names:
        return []  # OCTMNIST's published numbers say nothing about other data
    if data.synthetic:
        return ["Published OCTMNIST results are not shown: these results come from synthetic "
                "data, and the two are not comparable."]
    if not sizes:
        why = ("the data are not OCTMNIST" if names != {"octmnist"} else
               "the test split is not OCTMNIST's official one (250 per class)")
        return [f"Published OCTMNIST results are not shown: {why}."]
    catalogue = published()
    record_of = {key: runs[0].record for key, runs in group_runs(data.runs).items()}
    ours = [(r, record_of[(r.model, r.strategy, r.setup)]) for r in table.itertuples()
            if (r.model, r.strategy, r.setup) in record_of]
    same, apart = [], []
    for row in catalogue["rows"]:
        differences = [protocol_differences(row, record) for _, record in ours]
        if not all(differences):  # trained like at least one of our run groups
            same.append(row)
        else:
            apart.append((row, sorted({d for found in differences for d in found})))
    label = {sid: f"{md_escape(sid.replace('_', ' '))} [{i + 1}]"
             for i, sid in enumerate(catalogue["sources"])}
    out = ["**Published results on OCTMNIST (official test split).** Accuracy and macro AUC, "
           "the metrics the papers report. A published row stands beside ours only when it "
           "was trained the same way (image size, input size and channels, pretrained, mode, "
           "optimiser, epochs, augmentation); a number from another protocol is not a "
           "baseline for these runs.", ""]
    rows = [[f"ours: {md_names(r.model, r.strategy)}"
             + (f" ({md_escape(r.setup)})" if table.setup.nunique() > 1 else ""),
             str(record.dataset.get("size", "?")), f"{fmt(r.accuracy_mean)} ± "
             f"{fmt(r.accuracy_std)}", f"{fmt(r.macro_auc_mean)} ± {fmt(r.macro_auc_std)}",
             f"this report ({r.seeds} seeds)"] for r, record in ours]
    rows += [[f"*{md_escape(row['method'])}*", str(row["size"]), fmt(row["accuracy"]),
              fmt(row.get("auc")), label[row["source"]]] for row in same]
    out += [md_table(["Method", "Size (px)", "Accuracy", "Macro AUC", "Source"], rows,
                     align=["l", "r", "r", "r", "l"]), ""]
    if not same:
        out += ["No published row was trained under the protocol of these runs.", ""]
    if apart:
        out += ["**Different protocol** (not comparable with the runs above; shown for "
                "orientation, with how each differs from them — published vs ours):", "",
                md_table(["Method", "Size (px)", "Accuracy", "Macro AUC", "Source",
                          "Differs in"],
                         [[md_escape(row["method"]), str(row["size"]), fmt(row["accuracy"]),
                           fmt(row.get("auc")), label[row["source"]],
                           md_escape("; ".join(found))] for row, found in apart],
                         align=["l", "r", "r", "r", "l", "l"]), ""]
    for sid, source in catalogue["sources"].items():
        protocol = "; ".join(f"{k} {v}" for k, v in source["protocol"].items())
        out.append(f"{label[sid]} {md_escape(source['citation'])} Protocol: "
                   f"{md_escape(protocol)}.")
    out += ["", "Rows with AUC n/a: the source quoted here gives accuracy only. Optimiser, "
            "epochs or augmentation \"unknown\": an AutoML tool chose them."]
    out += [f"- Not stored ({label[gap['source']]}): {md_escape(gap['what'])} — "
            f"{md_escape(gap['reason'])}." for gap in catalogue.get("not_stored", [])]
    return out
