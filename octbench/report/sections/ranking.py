"""``## Rankings across seeds``: mean ranks, Friedman, Nemenyi CD and pairwise effect sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from octbench.rankings import MIN_BLOCKS
from octbench.report.collect import ReportData
from octbench.report.markdown import METRIC_LABELS, fmt, fmt_p, md_escape, md_table, synthetic_tag
from octbench.report.ranking import RANK_METRIC, SetupRanking


def ranking_section(data: ReportData, rankings: Sequence[SetupRanking]) -> list[str]:
    """The section's lines; a sentence instead of tables when nothing can be ranked."""
    tag = synthetic_tag(data.synthetic)
    out = [f"## Rankings across seeds{tag}", ""]
    if not rankings:
        return out + ["n/a: no setup has two or more configurations to rank."]
    metric = METRIC_LABELS[RANK_METRIC]
    out += [f"Every configuration of a setup is ranked on test {metric} "
            "within each seed they share (1 = best, ties share the mean rank). **Test used:** "
            "Friedman's test over the seeds (are the ranks all alike?), then Nemenyi's "
            "critical difference (CD): two configurations whose mean ranks differ by more than "
            "the CD differ at α = 0.05 (Demšar 2006). Effect sizes: the mean paired "
            "difference over seeds with its 95% t interval, and Cliff's delta (−1 to 1).", ""]
    for item in rankings:
        r = item.ranking
        if len(rankings) > 1:
            out += [f"### {md_escape(item.setup)}", ""]
        if len(item.seeds) < MIN_BLOCKS:
            out += [f"Too few seeds to rank: {len(item.seeds)} seed(s) shared by all "
                    f"{len(r.names)} configurations; at least {MIN_BLOCKS} are needed.", ""]
            continue
        order = sorted(range(len(r.names)), key=lambda i: r.mean_ranks[i])
        rows = [[md_escape(r.names[i]), fmt(r.mean_ranks[i], 2),
                 fmt(float(r.values[:, i].mean()))] for i in order]
        out += [md_table(["Configuration", "Mean rank", f"Mean {metric}"], rows), ""]
        friedman = ("Friedman: n/a" if math.isnan(r.friedman_p) else
                    f"Friedman χ² = {r.friedman_statistic:.2f}, {fmt_p(r.friedman_p)}")
        out += [f"{len(item.seeds)} seeds ({', '.join(map(str, item.seeds))}), "
                f"{len(r.names)} configurations. {friedman}; Nemenyi CD = "
                f"{fmt(r.critical_difference, 2)}." + (f" ⚠ {md_escape(r.note)}." if r.note
                                                        else ""), ""]
        pairs = [[md_escape(p.a), md_escape(p.b),
                  f"{fmt(p.delta, sign=True)} [{fmt(p.low, sign=True)}, "
                  f"{fmt(p.high, sign=True)}]", fmt(p.cliffs_delta, 2, sign=True),
                  fmt(p.rank_gap, 2),
                  "n/a" if math.isnan(r.critical_difference) else
                  ("different" if p.different else "within CD")]
                 for p in item.pairs.itertuples()]
        out += [md_table(["Better ranked", "Other", f"Δ {metric} [95% CI]",
                          "Cliff's δ", "Rank gap", "Nemenyi"], pairs,
                         align=["l", "l", "r", "r", "r", "l"]), ""]
    return out
