"""The evaluation's HTML report: metric tables, matplotlib plots and grids of top results."""

import shutil
from datetime import UTC, datetime
from pathlib import Path

from gallery.offline.metrics import RECALL_LEVELS
from gallery.offline.reporting import write_json

MISSING_PLOTTING = (
    "The evaluation report draws its plots with matplotlib, which is not installed: "
    "pip install 'visual-search[evaluation]'."
)


def pyplot():
    """matplotlib's pyplot, drawing to files (an optional dependency: the `evaluation` extra)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(MISSING_PLOTTING) from None
    matplotlib.use("Agg")  # files only; no display
    import matplotlib.pyplot

    return matplotlib.pyplot


METRIC_COLUMNS = ("AP", "nDCG@10", "MRR")


def metric_names(ks) -> list[str]:
    return [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + list(METRIC_COLUMNS)


def table_rows(figures: dict) -> list[list]:
    """The metric table of the page and of `evaluate`'s printed summary: a row per method."""
    rows = []
    for query_set, methods in figures["query_sets"].items():
        for method, scores in methods.items():
            rows.append(
                [
                    query_set,
                    method,
                    scores["queries"],
                    *[f"{scores[name]:.3f}" for name in metric_names(figures["ks"])],
                ]
            )
    return rows


def write_report(figures: dict, examples: list[dict], report_dir: Path) -> Path:
    report_dir = Path(report_dir)
    (report_dir / "thumbs").mkdir(parents=True, exist_ok=True)
    write_json(report_dir / "evaluation.json", figures)
    plots = [
        _pr_curves(figures, report_dir / "precision_recall.png"),
        _metric_bars(figures, report_dir / "metrics.png"),
        _per_query(figures, report_dir / "per_query_ap.png"),
        _zero_shot(figures, report_dir / "zero_shot.png"),
    ]
    page = report_dir / "report.html"
    page.write_text(_html(figures, _copy_thumbnails(examples, report_dir), plots))
    return page


def _copy_thumbnails(examples: list[dict], report_dir: Path) -> list[dict]:
    def local(path: str | None) -> str | None:
        if not path:
            return None
        target = report_dir / "thumbs" / Path(path).name
        if not target.exists():
            shutil.copyfile(path, target)
        return f"thumbs/{target.name}"

    copied = []
    for example in examples:
        copied.append(
            {
                **example,
                "image": local(example["image"]),
                "results": {
                    method: [{**hit, "image": local(hit["image"])} for hit in hits]
                    for method, hits in example["results"].items()
                },
            }
        )
    return copied


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path.name


def _pr_curves(figures, path: Path) -> str:
    sets = figures["query_sets"]
    fig, axes = pyplot().subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for axis, (query_set, methods) in zip(axes[0], sets.items(), strict=True):
        for method, scores in methods.items():
            axis.plot(RECALL_LEVELS, scores["pr_curve"], marker="o", label=method)
        axis.set(
            title=query_set,
            xlabel="recall",
            ylabel="interpolated precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(fig, path)


def _metric_bars(figures, path: Path) -> str:
    sets = figures["query_sets"]
    names = ["AP", "nDCG@10", "MRR", f"P@{max(figures['ks'])}"]
    fig, axes = pyplot().subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for axis, (query_set, methods) in zip(axes[0], sets.items(), strict=True):
        width = 0.8 / len(methods)
        for offset, (method, scores) in enumerate(methods.items()):
            axis.bar(
                [i + offset * width for i in range(len(names))],
                [scores[name] for name in names],
                width,
                label=method,
            )
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        axis.set(title=query_set, ylim=(0, 1))
        axis.legend(fontsize=8)
    return _save(fig, path)


def _per_query(figures, path: Path) -> str:
    per_query = figures["per_query_average_precision"]
    fig, axes = pyplot().subplots(1, len(per_query), figsize=(5 * len(per_query), 4), squeeze=False)
    for axis, (query_set, methods) in zip(axes[0], per_query.items(), strict=True):
        axis.boxplot(list(methods.values()), tick_labels=list(methods), showmeans=True)
        axis.set(title=f"{query_set}: AP per query", ylim=(0, 1))
    return _save(fig, path)


def _zero_shot(figures, path: Path) -> str:
    zero = figures["zero_shot"]
    modes = ["single prompt", "prompt ensemble"]
    fig, axis = pyplot().subplots(figsize=(5, 3.5))
    for offset, metric in enumerate(("top1", "top5")):
        axis.bar(
            [i + offset * 0.4 for i in range(2)],
            [zero[m][metric] for m in modes],
            0.4,
            label=metric,
        )
    axis.set_xticks([0.2, 1.2], modes)
    axis.set(title=f"Zero-shot accuracy, {zero['classes']} classes", ylim=(0, 1))
    axis.legend()
    return _save(fig, path)


def _html(figures: dict, examples: list[dict], plots: list[str]) -> str:
    from django.template.loader import render_to_string

    zero = figures["zero_shot"]
    return render_to_string(
        "gallery/evaluation_report.html",
        {
            "figures": figures,
            "dataset": figures["dataset"],
            "columns": ["query set", "method", "queries", *metric_names(figures["ks"])],
            "rows": table_rows(figures),
            "zero_shot": [(mode, zero[mode]) for mode in ("single prompt", "prompt ensemble")],
            "plots": plots,
            "examples": examples,
            "generated": datetime.now(UTC),
        },
    )
