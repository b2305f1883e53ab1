from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from gallery.indexing.encoder import ModelWeightsUnavailable
from gallery.offline import backend_agreement, datasets, evaluation, evaluation_report
from gallery.offline.reporting import FiguresPrinter, add_json_argument, formatted
from gallery.search.request import MAX_MARKED_IMAGES


class Command(BaseCommand):
    help = (
        "Measure retrieval quality on a labelled dataset (a folder per class, a CSV of "
        "path,caption[,class], 'tuxpaint' or 'fashion-mnist'): precision@k, recall@k, mAP, "
        "nDCG@10 and MRR for CLIP search (HNSW and exact), a keyword baseline and hybrid "
        "fusion, plus zero-shot accuracy. Runs in an isolated temporary database."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="path, or 'tuxpaint' / 'fashion-mnist'")
        parser.add_argument("--format", default="auto", choices=datasets.FORMATS)
        parser.add_argument("--model", default="", help="open_clip model (default: configured)")
        parser.add_argument("--pretrained", default="", help="pretrained tag, or 'random'")
        parser.add_argument("--weights", default="", help="local checkpoint file")
        parser.add_argument("--k", default="1,5,10", help="cut-offs for P@k and R@k")
        parser.add_argument("--depth", type=int, default=1000, help="results ranked per query")
        parser.add_argument(
            "--max-queries",
            type=int,
            default=300,
            help="caption and image queries sampled per query set",
        )
        parser.add_argument("--limit-per-class", type=int, default=None)
        parser.add_argument(
            "--report",
            type=Path,
            default=None,
            dest="report_dir",
            help="folder for report.html, plots and evaluation.json",
        )
        add_json_argument(parser, help="also write the figures here")
        parser.add_argument(
            "--feedback-rounds",
            type=int,
            default=0,
            help="also simulate relevance feedback: each round marks the first 10 results "
            "relevant or not (from the labels) and searches again; P@10 and mAP per round",
        )
        parser.add_argument(
            "--compare-backends",
            action="store_true",
            help="instead: mAP and top-10 overlap of ONNX fp32 and int8 against torch fp32",
        )

    def handle(
        self,
        *args,
        dataset,
        format,
        model,
        pretrained,
        weights,
        k,
        depth,
        max_queries,
        limit_per_class,
        report_dir,
        json_path,
        compare_backends,
        feedback_rounds,
        **options,
    ):
        try:
            ks = sorted({int(value) for value in k.split(",")})
        except ValueError:
            raise CommandError(f"--k takes numbers like 1,5,10, not {k!r}.") from None
        config = evaluation.EvaluationConfig(
            dataset=dataset,
            format=format,
            model=model,
            pretrained=pretrained,
            weights_file=weights,
            ks=ks,
            depth=depth,
            max_queries=max_queries,
            limit_per_class=limit_per_class,
            feedback_rounds=feedback_rounds,
        )
        most_rounds = MAX_MARKED_IMAGES // evaluation.FEEDBACK_JUDGED
        if not 0 <= feedback_rounds <= most_rounds:
            raise CommandError(f"--feedback-rounds takes 0 to {most_rounds}.")
        if compare_backends:
            return self._compare_backends(config, json_path)
        if report_dir is None:
            report_dir = Path("reports") / f"{Path(dataset).stem or dataset}-evaluation"
        try:
            evaluation_report.pyplot()  # before minutes of encoding, not after
        except ImportError as error:
            raise CommandError(str(error)) from None
        try:
            figures = evaluation.run_evaluation(config, report_dir=report_dir)
        except datasets.DatasetError as error:
            raise CommandError(str(error)) from None
        printer = FiguresPrinter(self.stdout)
        printer.save_json(json_path, figures, announce=False)
        self._print_model_and_dataset(printer, figures)
        printer.table(
            ["query set", "method", "n", *evaluation_report.metric_names(ks)],
            evaluation_report.table_rows(figures),
        )
        zero = figures["zero_shot"]
        printer.table(
            ["zero-shot", "top-1", "top-5"],
            [
                [mode, zero[mode]["top1"], zero[mode]["top5"]]
                for mode in ("single prompt", "prompt ensemble")
            ],
            gap=True,
        )
        for kind, suggestion in figures["suggested_confidence_thresholds"].items():
            printer.line(
                f"Suggested {kind} confidence threshold: {suggestion['threshold']:.3f} "
                f"(F1 {suggestion['f1']:.3f}; SEARCH_{kind.upper()}_CONFIDENCE)"
            )
        if "feedback" in figures:
            self._print_feedback(printer, figures["feedback"])
        printer.line(f"Report: {figures['report']}")

    @staticmethod
    def _print_model_and_dataset(printer: FiguresPrinter, figures: dict, more: str = "") -> None:
        info = figures["dataset"]
        printer.line(
            f"Model {figures['model']} (weights: {figures['weights']}); dataset {info['name']} "
            f"({info['images']} images, {info['classes']} classes){more}"
        )

    @staticmethod
    def _print_feedback(printer: FiguresPrinter, feedback: dict) -> None:
        weights = feedback["weights"]
        printer.line()
        printer.line(
            f"Relevance feedback: each round the first {feedback['judged_per_round']} results "
            f"are marked relevant or not from the labels (Rocchio: alpha {weights['alpha']:g}, "
            f"beta {weights['beta']:g}, gamma {weights['gamma']:g}); round 0 is the search "
            "without feedback. Residual mAP leaves out the images judged so far."
        )
        printer.records(
            [
                {**row, "query set": query_set}
                for query_set, rounds in feedback["query_sets"].items()
                for row in rounds
            ],
            {
                "query set": "query set",
                "round": "round",
                "n": "queries",
                "P@10": formatted("P@10", ".3f"),
                "mAP": formatted("mAP", ".3f"),
                "residual mAP": formatted("residual mAP", ".3f"),
                "round 0 residual mAP": formatted("first ranking residual mAP", ".3f"),
            },
        )

    def _compare_backends(self, config, json_path) -> None:
        try:
            figures = backend_agreement.compare_backends(config)
        except (datasets.DatasetError, ModelWeightsUnavailable) as error:
            raise CommandError(str(error)) from None
        printer = FiguresPrinter(self.stdout)
        self._print_model_and_dataset(printer, figures, "; exact ranking")
        printer.records(
            [
                {**row, "query set": query_set, "encoder": encoder}
                for query_set, encoders in figures["query_sets"].items()
                for encoder, row in encoders.items()
            ],
            {
                "query set": "query set",
                "encoder": "encoder",
                "n": "queries",
                "mAP": "mAP",
                "vs torch fp32": formatted("mAP_change", "+.4f"),
                "top-10 overlap": formatted("top10_overlap", ".1%"),
            },
        )
        printer.save_json(json_path, figures)
