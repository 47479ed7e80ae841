"""The Python API (visionbench/api/), the CLI's twin: the same runs from the same settings,
a run object with its history and figures, and the commands as methods and functions."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_data_inputs import writer_after
from typer.testing import CliRunner

import visionbench as vb
from visionbench.cli import app
from visionbench.data import load_dataset
from visionbench.errors import VisionbenchError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_python_and_cli_runs_end_with_bitwise_equal_weights(tmp_path, one_thread):
    settings = ["model.kwargs={width: 8}", "optim.lr=0.05", "aug.crop_padding=1"]
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            "digits",
            "--model",
            "small_cnn",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--name",
            "cli",
        ]
        + settings,
    )
    assert res.exit_code == 0, res.output
    run = vb.train(
        data="digits",
        model="small_cnn",
        epochs=2,
        device="cpu",
        name="api",
        quiet=True,
        aug={"crop_padding": 1},  # a section as a dict ...
        **{"optim.lr": 0.05, "model.kwargs": {"width": 8}},  # ... and dotted keys
    )
    cli = Path(os.environ["VISIONBENCH_RUNS"]) / "cli"
    assert (cli / "config.yaml").read_text() == (run.path / "config.yaml").read_text()
    for name in ("last.safetensors", "best.safetensors"):
        ours, theirs = load_file(str(run.path / name)), load_file(str(cli / name))
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name


def test_settings_errors_name_the_nearest_key():
    with pytest.raises(VisionbenchError, match="Did you mean 'optim.lr'"):
        vb.resolve(**{"optim.lrr": 0.1})
    with pytest.raises(VisionbenchError, match="unknown setting 'epoch'. Did you mean 'epochs'") as e:
        vb.train(epoch=1)  # as the CLI says for --epoch
    assert "epochs" in e.value.fix and "optim={'lr': 0.05}" in e.value.fix
    with pytest.raises(VisionbenchError, match="unknown setting 'optim_lr'. Did you mean 'optim.lr'"):
        vb.resolve(optim_lr=0.1)
    with pytest.raises(VisionbenchError, match="bad value for 'train.epochs'"):
        vb.train(epochs="many")
    cfg = vb.resolve(recipe="fast", data="digits", train={"epochs": 3}, seed=4)
    assert cfg.recipe.startswith("fast@") and cfg.train.epochs == 3 and cfg.seed == 4


def rows_of(frame) -> list[dict]:
    return frame.to_dict("records") if hasattr(frame, "to_dict") else frame


def test_run_object_history_figures_and_methods(tiny_run, tmp_path):
    run = vb.load(tiny_run)
    assert run.id == "tiny" and run.status == "finished" and 0.5 < run.summary["test_acc"] <= 1
    history = rows_of(run.history)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history == [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert {"learning curves", "confusion matrix (eval-last)"} <= set(run.figures)
    for kind in ("curves", "confusion", "reliability", "mistakes"):
        assert run.plot(kind)._repr_png_().startswith(PNG)
    assert 'src="data:image/png;base64,' in run._repr_html_() and "test top-1" in run._repr_html_()
    with pytest.raises(VisionbenchError, match="unknown plot 'confusio'. Did you mean 'confusion'"):
        run.plot("confusio")
    with pytest.raises(VisionbenchError, match="has no confusion figure yet"):
        run.plot("confusion", bundle="eval-best")

    tta = run.evaluate(tta=True)  # the CLI's eval: a bundle beside the run's files
    assert tta["tta"] == "flip" and tta["bundle"].endswith("eval-last-flip")
    assert "confusion matrix (eval-last-flip)" in tta.figures and "top-1" in tta._repr_html_()

    # predict: arrays (either channel order, uint8 or [0, 1] floats), PIL images, files, a folder
    test = load_dataset("digits").splits["test"].images[:6]
    probs = np.load(tiny_run / "eval-last" / "predictions.npz")["probs"][:6]
    labels = [str(i) for i in probs.argmax(1)]
    nchw = rows_of(run.predict(test))
    assert [r["label"] for r in nchw] == labels and [r["file"] for r in nchw] == list(range(6))
    assert [r["confidence"] for r in nchw] == pytest.approx(probs.max(1), abs=1e-5)
    assert [r["label"] for r in rows_of(run.predict(test.transpose(0, 2, 3, 1) / 255.0))] == labels
    assert rows_of(run.predict(torch.tensor(test[0])))[0]["label"] == labels[0]  # one image, a tensor
    pil = [Image.fromarray(img[0]) for img in test]
    assert [r["label"] for r in rows_of(run.predict(pil))] == labels
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(pil):
        img.save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    rows = rows_of(run.predict(folder, out=tmp_path / "p.csv"))
    assert [r["label"] for r in rows if not r["error"]] == labels and rows[-1]["file"] == "notes.txt"
    shown = lambda rows: [(r["file"], r["label"], r["top_k"], r["error"]) for r in rows]
    assert shown(rows_of(run.predict(str(folder)))) == shown(rows)  # a str: run.predict("photos/")
    assert (tmp_path / "p.csv").read_text().startswith("file,label,confidence,top_k,error")
    files = [folder / "0.png", folder / "1.png"]
    assert [r["label"] for r in rows_of(run.predict(files))] == labels[:2]
    bigger = np.kron(test, np.ones((1, 1, 2, 2), np.uint8))  # 16x16: resized as the run's data was
    assert len(rows_of(run.predict(bigger))) == 6
    with pytest.raises(VisionbenchError, match="cannot read an array of shape"):
        run.predict(np.zeros((2, 5, 8, 8), np.uint8))

    explained = run.explain(indices=[0, 1], target="true", device="cpu")  # explain_run's options
    assert [r["index"] for r in explained["images"]] == [0, 1] and explained["target"] == "true"
    assert explained.figures["explanations"]._repr_png_().startswith(PNG)
    exported = run.export("torchscript", out=tmp_path / "model.pt")
    assert exported["parity"]["max_abs_logit_diff"] <= 1e-4 and (tmp_path / "model.pt").is_file()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda run: vb.load(None), "vb.load takes a run's id or folder, not None"),
        (lambda run: vb.load(3), "vb.load takes a run's id or folder, not 3"),
        (lambda run: vb.ensemble("tiny"), "vb.ensemble takes a list of runs, not 'tiny'"),
        (lambda run: vb.ensemble(run), "vb.ensemble takes a list of runs"),
        (lambda run: run.predict(5), r"cannot read 5 \(int\) as an image"),
        (lambda run: run.predict(None), r"cannot read None \(NoneType\) as an image"),
        (lambda run: run.explain(indices="3"), "test indices are whole numbers, not '3'"),
        (lambda run: run.explain(indices=[0, 1.5]), "test indices are whole numbers, not 1.5"),
        (lambda run: vb.train(data_dir=5), r"data_dir is a path, not 5 \(int\)"),
        (lambda run: vb.train(runs_dir=5), r"runs_dir is a path, not 5 \(int\)"),
        (lambda run: vb.train(config=5), r"config is a path, not 5 \(int\)"),
        (lambda run: vb.train(epochs=True), "epochs is a number, not True"),  # not 1 epoch
        (lambda run: vb.lr_find(lr=False), "lr is a number, not False"),
        (lambda run: run.predict(np.zeros((8, 8)), top_k=-1), "top_k .* a whole number from 1, not -1"),
    ],
)
def test_wrong_types_are_clear_errors_not_type_errors(tiny_run, call, message):
    with pytest.raises(VisionbenchError, match=message) as e:
        call(vb.load(tiny_run))
    assert e.value.fix


def test_nan_pixels_given_to_predict_are_an_error_naming_the_images(tiny_run, recwarn):
    images = np.full((3, 1, 8, 8), 0.5, np.float32)
    images[1, 0, 2, 2] = np.nan
    with pytest.raises(VisionbenchError, match="1 of the 3 images given have NaN or infinite") as e:
        vb.load(tiny_run).predict(images)
    assert e.value.where == "image 1" and "np.nan_to_num" in e.value.fix
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_one_explain_index_is_a_list_of_one(tiny_run):
    explained = vb.load(tiny_run).explain(indices=3, device="cpu")
    assert [r["index"] for r in explained["images"]] == [3]


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_runs_compare_and_ensemble(tiny_run, tmp_path):
    runs_dir = tmp_path / "more"
    b = vb.train(
        data="digits", model="small_cnn", epochs=1, device="cpu", seed=1, runs_dir=runs_dir, quiet=True
    )
    a = vb.load(tiny_run)
    table = vb.compare(a, b, rows="seed", cols="train.epochs", reference="rsb-resnet50")
    assert table.table["row_values"] == ["0", "1"] and len(rows_of(table.grid)) == 2
    assert table.references[0]["name"] == "rsb-resnet50" and table.curves._repr_png_().startswith(PNG)
    html = table._repr_html_()
    assert "ImageNet-1k" in html and 'src="data:image/png;base64,' in html
    assert "| 0 |" in table.to_markdown()

    pair = vb.ensemble([a, b], vote="soft", weights=[1, 2], save="pair", runs_dir=runs_dir)
    assert pair.report["vote"] == "soft" and [m["id"] for m in pair.report["members"]] == ["tiny", b.id]
    assert pair.report["weights"] == [1.0, 2.0] and "confusion matrix (eval)" in pair.report.figures
    listed = rows_of(vb.runs(runs_dir))
    assert {(r["id"], r["kind"]) for r in listed} == {(b.id, "run"), ("pair", "ensemble")}
    again = vb.load("pair", runs_dir)
    assert isinstance(again, vb.Ensemble) and again.members == ["tiny", b.id]
    assert again.report["top1"] == pair.report["top1"] and "soft vote" in again._repr_html_()
    test = load_dataset("digits").splits["test"].images[:8]
    preds = np.load(runs_dir / "pair" / "eval" / "predictions.npz")["preds"][:8]
    assert [r["label"] for r in rows_of(again.predict(test))] == [str(p) for p in preds]
    assert again.evaluate()["top1"] == pytest.approx(pair.report["top1"])


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_sweep_and_lr_find(tmp_path):
    tiny = {
        "data": "digits",
        "model": "small_cnn",
        "device": "cpu",
        "quiet": True,
        "model.kwargs": {"width": 8},
    }
    rows = rows_of(vb.sweep({"seed": [0, 1]}, name="two", epochs=1, **tiny))
    assert [r["status"] for r in rows] == ["finished", "finished"] and [r["seed"] for r in rows] == [0, 1]
    assert rows_of(vb.sweep({"seed": [0, 1]}, name="two", epochs=1, **tiny)) == rows  # skipped, not redone
    found = vb.lr_find(iters=20, **tiny)
    assert found["suggestions"]["valley"]["median"] and found.figures["lr_find"]._repr_png_().startswith(PNG)


def test_import_is_light_and_the_api_loads_on_first_use():
    import subprocess

    code = "import visionbench as vb, sys; assert 'torch' not in sys.modules; print(vb.train.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "visionbench.api"


@pytest.mark.slow  # a Jupyter kernel, two trainings and their figures: ~20 s on 2 cores
def test_quickstart_notebook_runs_top_to_bottom_and_shows_the_figures(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # a kernel spec of our own, first on JUPYTER_PATH: this Python, whatever "python3" means here
    spec = tmp_path / "jupyter" / "kernels" / "visionbench-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "test", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    t0 = time.perf_counter()
    # the kernel inherits this process's environment: the test's runs folder and data cache
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="visionbench-test", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    seconds = time.perf_counter() - t0
    nbformat.write(notebook, tmp_path / "executed.ipynb")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2 and all(p.startswith(PNG) for p in pngs)  # run.plot: curves, confusion matrix
    pages = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    card = next(p for p in pages if "<h4>" in p and "test top-1" in p)  # the run, shown by itself
    assert card.count('<img src="data:image/png;base64,') == 2
    compared = next(p for p in pages if "mean ± std over seeds" in p)
    assert "<td>0.02</td>" in compared and "<td>0.2</td>" in compared and "data:image/png" in compared
    finished = list(Path(os.environ["VISIONBENCH_RUNS"]).glob("*/summary.json"))
    assert len(finished) == 2, finished
    assert seconds < 240


def labels_of(frame) -> list[str]:
    return [r["label"] for r in rows_of(frame)]


def test_arrays_are_read_in_the_stated_layouts_or_refused(tiny_run):
    run = vb.load(tiny_run)  # grey 8x8 digits
    test = load_dataset("digits").splits["test"].images[:3]
    want = labels_of(run.predict(test))
    grey = test[0, 0]
    rgb = np.repeat(grey[:, :, None], 3, axis=2)  # its luma is `grey`, exactly
    one_image = [grey, rgb, rgb.transpose(2, 0, 1), torch.tensor(rgb.transpose(2, 0, 1)), [rgb]]
    for image in one_image:  # HW, HWC, CHW (a 3-D array is one image, never 3 grey ones), a list
        assert labels_of(run.predict(image)) == want[:1]
    assert len(rows_of(run.predict(np.kron(rgb, np.ones((8, 8, 1), np.uint8))))) == 1  # 64x64x3
    assert labels_of(run.predict([grey, rgb, test[2]])) == [want[0], want[0], want[2]]
    assert len(rows_of(run.predict(top_k=99, images=test))[0]["top_k"].split()) == 10  # every class
    refused = {
        "no axis holds 1, 3 or 4 channels": np.zeros((6, 8, 8), np.uint8),  # (N, H, W): give C
        "channels could be first or last": np.zeros((2, 3, 8, 3), np.uint8),
        "normalised images": (test / 255.0 - 0.5) / 0.25,
        "pixel values from 0 to 300": np.linspace(0, 300, 64).astype(np.int64).reshape(8, 8),
    }
    for message, array in refused.items():
        with pytest.raises(VisionbenchError, match=message) as e:
            run.predict(array)
        assert "(H, W) one grey image; (C, H, W) or (H, W, C) one image" in e.value.fix
    assert "images[:, None]" in pytest.raises(VisionbenchError, run.predict, np.zeros((6, 8, 8))).value.fix
    assert len(rows_of(run.predict(torch.zeros(2, 3, 8, 3)))) == 2  # a tensor is channels first


def test_uint16_arrays_are_scaled_as_16_bit_files_are(tiny_run, tmp_path):
    run = vb.load(tiny_run)
    grey = load_dataset("digits").splits["test"].images[:4, 0]
    deep = grey.astype(np.uint16) * 257  # the same images in 16 bits: 255 -> 65535
    files = [tmp_path / f"{i}.png" for i in range(len(deep))]
    for img, file in zip(deep, files):
        Image.fromarray(img).save(file)  # a 16-bit PNG
    shown = lambda frame: [(r["label"], r["top_k"]) for r in rows_of(frame)]
    assert shown(run.predict(deep[:, None])) == shown(run.predict(files)) == shown(run.predict(grey[:, None]))


def test_pil_images_in_float_and_cmyk_modes_are_converted_as_files_are(tiny_run, tmp_path):
    run = vb.load(tiny_run)
    grey = load_dataset("digits").splits["test"].images[:2, 0]
    floats = [Image.fromarray(g.astype(np.float32) / 255) for g in grey]  # mode F, in [0, 1]
    assert labels_of(run.predict(floats)) == labels_of(run.predict(grey[:, None]))
    cmyk = [Image.fromarray(np.repeat(g[:, :, None], 3, axis=2)).convert("CMYK") for g in grey]
    files = [tmp_path / f"{i}.tif" for i in range(len(cmyk))]
    for img, file in zip(cmyk, files):
        img.save(file)  # TIFF keeps CMYK
    assert rows_of(run.predict(cmyk))[0]["error"] == ""
    assert labels_of(run.predict(cmyk)) == labels_of(run.predict(files))


def test_a_fifo_given_to_predict_is_refused_not_waited_on(tiny_run, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with writer_after(fifo):
        [row] = rows_of(vb.load(tiny_run).predict([fifo]))
    assert row["file"] == str(fifo) and row["error"] == "not a regular file (a FIFO): not read"


def test_an_output_path_that_cannot_be_written_is_refused_before_predicting(tiny_run, tmp_path, monkeypatch):
    import visionbench.commands.predict as predict

    monkeypatch.setattr(predict, "label_rows", lambda *a, **k: pytest.fail("predicted before checking --out"))
    (tmp_path / "file").write_text("")
    wrong = {
        "is a folder, not a CSV file": tmp_path,
        "it is a file, not a folder": tmp_path / "file" / "p.csv",
    }
    for message, out in wrong.items():
        with pytest.raises(VisionbenchError, match=message):
            vb.load(tiny_run).predict(np.zeros((8, 8), np.uint8), out=out)
