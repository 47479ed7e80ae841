"""What the Python API returns: a run, an ensemble, a comparison, figures that Jupyter shows
inline, and command results with their figures. Each method calls the CLI's own function."""

from __future__ import annotations

import base64
import html
import io
from functools import cached_property
from pathlib import Path

from ..errors import VisionbenchError

# what `Run.plot` draws: the file in the run folder ({bundle}: an evaluation bundle, eval-last/)
PLOTS = {
    "curves": "curves.png",
    "confusion": "{bundle}/confusion.png",
    "confusion_normalized": "{bundle}/confusion_normalized.png",
    "reliability": "{bundle}/reliability.png",
    "pr_curves": "{bundle}/pr_curves.png",  # multi-label runs
    "mistakes": "{bundle}/mistakes.png",
    "explain": "explain/explain.png",
}


def table(rows: list[dict]):
    """Rows as a pandas DataFrame when pandas is importable, else the list of dicts itself."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


def header_table(header: list[str], body: list[list]):
    return table([dict(zip(header, row)) for row in body])


def html_table(header: list, body: list[list]) -> str:
    cells = lambda tag, row: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)
    return (
        f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>"
        + "".join(f"<tr>{cells('td', row)}</tr>" for row in body)
        + "</tbody></table>"
    )


class Figure:
    """A PNG figure: shown inline when it is the last value of a Jupyter cell; `path` is its
    file (None for one drawn in memory)."""

    def __init__(self, path: str | Path | None = None, caption: str = "", png: bytes | None = None):
        self.path, self.caption, self.png = Path(path) if path else None, caption, png

    def _repr_png_(self) -> bytes:
        return self.png if self.png is not None else self.path.read_bytes()

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self._repr_png_()).decode()

    def _repr_html_(self) -> str:
        caption = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure><img src="{self.data_uri()}" style="max-width:100%">{caption}</figure>'

    def __repr__(self) -> str:
        return f"Figure({str(self.path) if self.path else self.caption!r})"


class Result(dict):
    """A command's result (a dict, as the CLI's --json prints it) with its figures; shown in
    Jupyter as its headline and figures."""

    def __init__(self, data: dict, figures: dict[str, Figure] | None = None, headline: str = ""):
        super().__init__(data)
        self.figures, self.headline = figures or {}, headline

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.headline)}</p>" + "".join(
            f._repr_html_() for f in self.figures.values()
        )


def bundle_figures(bundle: str | Path) -> dict[str, Figure]:
    """The figures of an evaluation bundle (RUN/eval-*/), by caption, as the report shows them."""
    from ..analysis.report import figures_in

    bundle = Path(bundle)
    return {
        f.caption: Figure(f.path, f.caption) for f in figures_in(bundle.parent) if f.path.parent == bundle
    }


def evaluation(rep: dict, bundle: str | Path | None = None) -> Result:
    """An evaluation (metrics.json's schema) with its bundle's figures and a one-line headline."""
    shown = {"top1": "top-1 {:.2%}", "top5": "top-5 {:.2%}", "loss": "loss {:.4f}", "ece": "ECE {:.2%}"}
    if rep.get("task") == "multilabel":
        shown = {"map": "mAP {:.2%}", "macro_f1": "macro-F1 {:.2%}", "exact_match": "exact match {:.2%}"}
    numbers = ", ".join(f.format(rep[k]) for k, f in shown.items() if rep.get(k) is not None)
    tta = f" (TTA: {rep['tta']})" if rep.get("tta") else ""
    headline = f"{rep.get('run', '')} on {rep.get('n', 0):,} test images{tta}: {numbers}"
    bundle = bundle or rep.get("bundle")
    return Result(rep, bundle_figures(bundle) if bundle else {}, headline)


def ref_of(x) -> str:
    """A run or ensemble given as an object, a folder or an id: what the commands take."""
    return str(x.path) if isinstance(x, (Run, Ensemble)) and x.path else str(x)


def tta_mode(tta: bool | str | None) -> str | bool | None:
    """The API's `tta`: unset, each run's own views (train.tta); true: flip; false: none; or a
    name (engine/tta.py)."""
    if tta is not None and not isinstance(tta, (bool, str)):
        raise VisionbenchError(
            f"tta={tta!r} is not a choice", fix="pass tta=True, False, 'flip' or 'flip-translate'"
        )
    return tta


class Predicts:
    """What a run and an ensemble share: labelling images."""

    def predictor(self, weights: str | None = None, device: str = "auto"):
        raise NotImplementedError

    def predict(
        self,
        images,
        top_k: int = 5,
        tta: bool | str | None = None,
        out: str | Path | None = None,
        **open_args,
    ):
        """Labels for `images`: a folder or .zip/.tar of image files (as `visionbench predict`),
        image files, PIL images (any mode, converted as a file's), an array or tensor, or a
        list of these. Arrays and tensors (data.arrays.LAYOUTS):

        - (H, W): one grey image; (C, H, W) or (H, W, C): one image - a 3-D array is never a
          batch: N grey images are (N, 1, H, W), e.g. `images[:, None]`;
        - (N, C, H, W) or (N, H, W, C): a batch; C is 1, 3 or 4 (grey, RGB, RGBA);
        - uint8, uint16 (0-65535, scaled as a 16-bit PNG is) or floats in [0, 1].

        Where the channels could be first or last (e.g. (N, 3, 8, 3)) a tensor is read channels
        first and an array is refused unless one reading has the run's size; normalised or
        out-of-range pixels and NaN are refused too. One row per image: file (or index), label,
        confidence, top_k ("class:prob ...", `top_k` from 1), error (why a file could not be
        read). `out` also writes the rows as CSV (checked before predicting); `weights` (runs:
        last or best) and `device` choose how to predict.

        >>> run.predict("unlabelled/", out="predictions.csv")
        >>> run.predict(images_uint8_nchw)["label"]
        """
        from ..commands.predict import check_out, predict_rows, write_predictions

        if out:
            check_out(Path(out))
        predictor = self.predictor(**open_args)
        rows = predict_rows(predictor, images, top_k, tta_mode(tta))
        if out:
            write_predictions(rows, Path(out), predictor.multilabel)
        return table(rows)


class Run(Predicts):
    """A run folder (see the README's "A run is a folder"), as `vb.train` returns it or
    `vb.load` opens it.

    >>> run.summary["test_acc"], run.history, run.figures
    >>> run.evaluate(tta=True); run.explain(count=4); run.export("onnx")
    """

    def __init__(self, path: str | Path):
        from ..runs import Run as RunFolder

        self.record = RunFolder(Path(path))
        self.path = self.record.path

    @property
    def id(self) -> str:
        return self.record.id

    @cached_property
    def config(self):
        """The resolved config (config.yaml) as the typed RunConfig."""
        return self.record.config()

    @property
    def summary(self) -> dict:
        """summary.json: test accuracy, top-5, loss, epochs, seconds, ... ({} until finished)."""
        return self.record.read_json("summary.json")

    @property
    def status(self) -> str:
        return (
            "finished"
            if self.record.finished
            else self.record.read_json("run.json").get("status", "unfinished")
        )

    @property
    def history(self):
        """metrics.jsonl: one row per epoch (train/val loss and accuracy, lr, seconds, images/s)."""
        return table(self.record.metrics())

    @property
    def figures(self) -> dict[str, Figure]:
        """Every figure in the run folder, by caption (curves, confusion, reliability, ...)."""
        from ..analysis.report import figures_in

        return {f.caption: Figure(f.path, f.caption) for f in figures_in(self.path)}

    def plot(self, kind: str = "curves", bundle: str = "eval-last") -> Figure:
        """One figure, shown inline in Jupyter: curves, confusion, confusion_normalized,
        reliability, mistakes (from the evaluation `bundle`, e.g. eval-best-flip) or explain.

        >>> run.plot("confusion_normalized")
        """
        from ..errors import unknown_name

        if kind not in PLOTS:
            raise unknown_name("plot", kind, PLOTS)
        path = self.path / PLOTS[kind].format(bundle=bundle)
        if kind == "curves" and not path.is_file() and self.record.metrics():  # an unfinished run
            from ..analysis.plots import plot_curves

            plot_curves(self.record.metrics(), path, title=self.id)
        if not path.is_file():
            make = "run.explain()" if kind == "explain" else f"run.evaluate() (writes {bundle}/)"
            raise VisionbenchError(f"run '{self.id}' has no {kind} figure yet", where=str(path), fix=make)
        return Figure(path, f"{self.id}: {kind}")

    def predictor(self, weights: str | None = None, device: str = "auto"):
        from ..analysis.predictor import open_predictor

        return open_predictor(self.path, None, weights, device)

    def evaluate(self, weights: str = "last", tta: bool | str | None = None, device: str = "auto") -> Result:
        """`visionbench eval`: the test evaluation, its bundle written to RUN/eval-<weights>[-<views>]/;
        a dict of metrics.json's schema (top1, top5, loss, ece, per_class, confusion, ...) with
        the bundle's figures.

        >>> run.evaluate(tta=True)["top1"]
        """
        from ..commands.evaluate import evaluate

        return evaluation(evaluate(str(self.path), None, weights, device, tta_mode(tta)))

    def explain(self, indices: int | list[int] | None = None, **options) -> Result:
        """`visionbench explain`: saliency, SmoothGrad, Integrated Gradients and Grad-CAM maps
        for test images `indices` (one or a list; default: the `count`=8 worst-classified), into RUN/explain/;
        options as explain_run's: count, layer (Grad-CAM's, default the last conv), target
        ("pred" or "true"), weights ("last" or "best"), device. Needs captum
        (`pip install "visionbench[explain]"`).

        >>> run.explain(indices=[3, 17])
        """
        from ..commands.explain import explain_run

        rep = explain_run(str(self.path), None, indices, **options)
        return Result(
            rep, {"explanations": Figure(rep["png"], "explanations")}, f"Grad-CAM layer {rep['layer']}"
        )

    def export(
        self,
        format: str = "onnx",
        out: str | Path | None = None,
        weights: str = "last",
        images: int = 64,
        tolerance: float = 1e-4,
    ) -> Result:
        """`visionbench export`: ONNX or TorchScript, with its logits checked against PyTorch's
        on `images` test images (an error past `tolerance`).

        >>> run.export("torchscript")["path"]
        """
        from ..commands.export import export_run

        rep = export_run(str(self.path), format, Path(out) if out else None, None, weights, images, tolerance)
        return Result(
            rep,
            headline=f"wrote {rep['path']}; max abs logit difference {rep['parity']['max_abs_logit_diff']:.3g}",
        )

    def resume(self, quiet: bool = False) -> Run:
        """Continue this interrupted run from its checkpoint (`visionbench train --resume`).

        >>> vb.load("big").resume().summary["test_acc"]
        """
        from ..commands.train import train as fit

        return Run(fit(None, resume=str(self.path), quiet=quiet).path)

    def __repr__(self) -> str:
        acc = self.summary.get("test_acc")
        return f"Run({self.id!r}, {self.status}" + (f", test acc {acc:.2%})" if acc is not None else ")")

    def _repr_html_(self) -> str:
        s = self.summary
        facts = [["status", self.status], ["folder", str(self.path)]]
        if s:
            facts += [
                ["test mAP / exact match", f"{s['map']:.2%} / {s['exact_match']:.2%}"]
                if "map" in s  # a multi-label run
                else ["test top-1 / top-5", f"{s['test_acc']:.2%} / {s['test_top5']:.2%}"],
                ["epochs, training seconds", f"{s['epochs']}, {s['train_seconds']:.1f}"],
                ["model, parameters", f"{s['model']}, {s['params']:,}"],
            ]
        shown = [f for f in self.figures.values() if f.path.name in ("curves.png", "confusion.png")]
        return (
            f"<h4>{html.escape(self.id)}</h4>"
            + html_table(["", ""], facts)
            + "".join(f._repr_html_() for f in shown)
        )


class Ensemble(Predicts):
    """Runs combined by a vote, as `vb.ensemble` builds it or `vb.load` opens a saved one;
    `report` is its test evaluation (the vote's accuracy beside each member's, agreement)."""

    def __init__(self, voter, report: dict | None = None):
        self.voter = voter  # analysis.predictor.Ensemble
        self.path = voter.path
        self.report = evaluation(report, voter.path / "eval" if voter.path else None) if report else None

    @property
    def id(self) -> str:
        return self.voter.id

    @property
    def members(self) -> list[str]:
        return [m.id for m in self.voter.members]

    def predictor(self, weights: str | None = None, device: str = "auto"):
        return self.voter

    def evaluate(self, tta: bool | str | None = None) -> Result:
        """The test evaluation again (with TTA: each member averages the image and its mirror);
        a saved ensemble writes its bundle into ENSEMBLE/eval[-<views>]/.

        >>> vb.load("trio").evaluate(tta=True)["top1"]
        """
        from ..analysis.evaluation import bundle_name, evaluate_predictor

        folder = self.path / bundle_name(self.voter, tta_mode(tta)) if self.path else None
        return evaluation(evaluate_predictor(self.voter, tta_mode(tta), folder))

    def __repr__(self) -> str:
        return f"Ensemble({self.id!r}, {self.voter.vote} vote of {', '.join(self.members)})"

    def _repr_html_(self) -> str:
        if not self.report:
            return html.escape(repr(self))
        r = self.report
        body = [[f"{r['vote']} vote", f"{r['top1']:.2%}"]] + [
            [m["id"], f"{m['top1']:.2%}"] for m in r["members"]
        ]
        return f"<h4>{html.escape(repr(self))}</h4>" + html_table(["", "test top-1"], body)


class Comparison:
    """`visionbench compare`: finished runs grouped by two config keys, test accuracy as mean ±
    std over seeds, with the costs, published references and overlaid learning curves."""

    def __init__(self, records, rows: str, cols: str | None, references: list[str]):
        from ..analysis import compare as cmp
        from ..analysis.plots import plot_overlaid_curves

        self.table = cmp.compare_table(records, rows, cols)
        self.references = [cmp.reference_block(name, records) for name in references]
        buf = io.BytesIO()
        plot_overlaid_curves({r.id: r.metrics for r in records}, buf, title="learning curves")
        self.curves = Figure(caption="learning curves", png=buf.getvalue())

    @property
    def grid(self):
        """Test accuracy % (mean ± std, n) with one row per `rows` value, a column per `cols` value."""
        from ..analysis.compare import pivot

        return header_table(*pivot(self.table))

    @property
    def details(self):
        """One row per group: accuracy, seeds, parameters, training seconds, images/s."""
        from ..analysis.compare import details

        return header_table(*details(self.table))

    def to_markdown(self) -> str:
        from ..analysis.compare import to_markdown

        return to_markdown(self.table, self.references)

    def __repr__(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        from ..analysis.compare import details, pivot

        parts = [
            f"<p>test accuracy %, mean ± std over seeds: rows {self.table['rows']}, columns {self.table['cols']}</p>"
        ]
        parts += [html_table(*pivot(self.table)), html_table(*details(self.table))]
        for ref in self.references:
            parts.append(f"<p><b>{html.escape(ref['title'])}</b> ({html.escape(ref['source'])})</p>")
            parts += [html_table(ref["header"], ref["rows"])]
            parts += [html_table(["", "ours", "reference"], [list(d.values()) for d in ref["differences"]])]
        return "".join(parts) + self.curves._repr_html_()
