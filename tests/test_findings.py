"""The verdicts on a write-up's findings, on hand-made results (no training): a gap beyond the
noise holds or fails, one inside it is 'not distinguishable' until there are >= 2 seeds, and a
claim on a run that is missing or trained on other data is 'not testable at this scale'."""

from __future__ import annotations

import pytest

from visionbench.analysis.findings import (
    FAILS,
    HOLDS,
    NOISE,
    UNTESTABLE,
    Cell,
    check_finding,
    check_findings,
    evaluate,
)
from visionbench.errors import VisionbenchError


def verdict(check: dict, cells: list[Cell], steps=None, **extra) -> dict:
    (out,) = evaluate([{"claim": "c", "check": check, **extra}], cells, steps)
    return out


def test_better_holds_fails_or_is_noise_with_one_seed():
    cells = [Cell("a", top1=70.0), Cell("b", top1=66.0), Cell("c", top1=69.5)]
    assert verdict({"better": ["a", "b"]}, cells)["verdict"] == HOLDS
    assert verdict({"better": ["b", "a"]}, cells)["verdict"] == FAILS
    out = verdict({"better": ["a", "c"]}, cells)  # +0.5 under the 1-point floor, one seed
    assert out["verdict"] == NOISE and "needs >= 2 seeds" in out["numbers"] and "+0.50" in out["numbers"]
    assert verdict({"better": ["a", "c"]}, cells, noise=0.2)["verdict"] == HOLDS  # the claim's own floor


def test_seeds_pool_and_the_seed_spread_decides():
    tight = [Cell("a", {"seed": s}, top1=v) for s, v in enumerate([70.0, 70.1])]
    tight += [Cell("b", {"seed": s}, top1=v) for s, v in enumerate([69.4, 69.5])]
    out = verdict({"better": ["a", "b"]}, tight)  # a 0.6 gap: under the floor, over the seed spread
    assert out["verdict"] == HOLDS and "2 seeds" in out["numbers"]
    wide = [Cell("a", {"seed": s}, top1=v) for s, v in enumerate([68.0, 72.0])]
    wide += [Cell("b", {"seed": s}, top1=v) for s, v in enumerate([67.0, 71.0])]
    assert verdict({"better": ["a", "b"]}, wide)["verdict"] == NOISE  # 1 point, spread 2.8


def test_best_order_and_at_least():
    sweep = [
        Cell("dropout", {"model.kwargs": {"rate": r}}, top1=t)
        for r, t in [(0.1, 68.4), (0.5, 65.0), (0.9, 40.0)]
    ]
    best = {"best": {"run": "dropout", "model.kwargs.rate": 0.1}, "among": "dropout"}
    assert verdict(best, sweep)["verdict"] == HOLDS
    worst = {"best": {"run": "dropout", "model.kwargs.rate": 0.9}, "among": "dropout"}
    assert verdict(worst, sweep)["verdict"] == FAILS
    chain = [Cell("r18", top1=90.0), Cell("vgg", top1=86.0), Cell("cnn", top1=66.0)]
    assert verdict({"order": ["r18", "vgg", "cnn"]}, chain)["verdict"] == HOLDS
    assert verdict({"order": ["r18", "cnn", "vgg"]}, chain)["verdict"] == FAILS
    assert verdict({"at_least": {"run": "r18", "top1": 89.0}}, chain)["verdict"] == HOLDS
    assert verdict({"at_least": {"run": "r18", "top1": 90.5}}, chain)["verdict"] == NOISE
    assert verdict({"at_least": {"run": "r18", "top1": 95}}, chain)["verdict"] == FAILS


def test_better_each_pairs_cells_by_a_grid_key():
    grid = [
        Cell("basic", {"model.name": m, "recipe": r}, top1=t)
        for m, r, t in [
            ("r18", "augmented", 52),
            ("r18", "baseline", 44),
            ("r34", "augmented", 45),
            ("r34", "baseline", 44.7),
        ]
    ]
    check = {"better": [{"recipe": "augmented"}, {"recipe": "baseline"}], "each": "model.name"}
    out = verdict(check, grid)
    assert out["verdict"] == NOISE and "r34" in out["numbers"]  # r18 holds, r34 is inside the noise
    grid[2].top1 = 40
    assert verdict(check, grid)["verdict"] == FAILS


def test_no_better_and_ensembles_against_their_best_member():
    opt = [Cell("opt", {"optim.name": n}, top1=t) for n, t in [("yogi", 44.5), ("adam", 44.0), ("sgd", 40.0)]]
    yogi = {
        "no_better": [{"run": "opt", "optim.name": "yogi"}, [{"optim.name": "adam"}, {"optim.name": "sgd"}]]
    }
    assert verdict(yogi, opt)["verdict"] == HOLDS  # +0.5 over Adam: no substantial improvement
    opt[0].top1 = 50.0
    assert verdict(yogi, opt)["verdict"] == FAILS
    vote = [Cell("vote", top1=91.9), Cell("m64", top1=86.4), Cell("m224", top1=89.8), Cell("r50", top1=90.6)]
    out = verdict({"better": ["vote", ["m64", "m224", "r50"]]}, vote)
    assert out["verdict"] == HOLDS and "r50 90.60" in out["numbers"]  # against the best member


def test_unfreezing_helps_compares_the_end_of_the_frozen_stage_with_the_end():
    cells = [
        Cell("m", top1=80, stage_top1=70.0, final_val=80.0),
        Cell("r", top1=80, stage_top1=79.8, final_val=80.0),
    ]
    assert verdict({"unfreezing_helps": ["m"]}, cells)["verdict"] == HOLDS
    assert verdict({"unfreezing_helps": ["m", "r"]}, cells)["verdict"] == NOISE
    assert verdict({"unfreezing_helps": ["x"]}, cells)["verdict"] == UNTESTABLE


def test_untestable_when_a_run_is_missing_elsewhere_or_without_its_step():
    cells = [Cell("a", top1=70.0), Cell("b", top1=60.0, untestable="trained on digits, not tiny-imagenet")]
    out = verdict({"better": ["a", "b"]}, cells)
    assert out["verdict"] == UNTESTABLE and "digits" in out["why"]
    assert verdict({"better": ["a", "vgg"]}, cells)["verdict"] == UNTESTABLE  # skipped at this scale
    ours = [Cell("a", top1=70.0, weights="our pretraining, not ImageNet's"), Cell("c", top1=60.0)]
    assert verdict({"better": ["a", "c"]}, ours)["verdict"] == HOLDS
    out = verdict({"better": ["a", "c"]}, ours, needs="imagenet")
    assert out["verdict"] == UNTESTABLE and "not ImageNet" in out["why"]
    check = {"unstable": {"run": "a", "spread": 2}}
    assert verdict(check, cells)["verdict"] == UNTESTABLE  # no lr-find step ran
    steps = [
        {"kind": "lr_find", "run": "study-cpu-a", "suggestions": {"valley": {"median": 1e-3, "spread": 3.1}}}
    ]
    assert verdict(check, cells, steps)["verdict"] == HOLDS
    steps[0]["suggestions"]["valley"]["spread"] = 1.3
    assert verdict(check, cells, steps)["verdict"] == FAILS


def test_a_malformed_finding_is_an_error_naming_the_nearest_check():
    check_finding({"claim": "x", "check": {"better": ["a", "b"]}}, "f.yaml")
    with pytest.raises(VisionbenchError, match="beter.*better"):
        check_finding({"claim": "x", "check": {"beter": ["a", "b"]}}, "f.yaml")
    with pytest.raises(VisionbenchError, match="claime.*claim"):
        check_finding({"claim": "x", "claime": 1, "check": {"better": ["a", "b"]}}, "f.yaml")
    with pytest.raises(VisionbenchError, match="no run or ensemble 'mobilenet_22'.*mobilenet_224"):
        check_findings(
            [{"claim": "x", "check": {"better": ["mobilenet_22", "vote"]}}], ["mobilenet_224", "vote"], "f"
        )
    with pytest.raises(VisionbenchError, match="'simple'.*simple_cnn"):
        check_findings(
            [{"claim": "x", "check": {"at_least": {"run": "simple", "top1": 80}}}], ["simple_cnn"], "f"
        )


def test_the_report_reads_runs_and_ensembles_into_verdicts():
    """study_report.findings_rows on hand-made records: test top-1 from summary.json, the
    validation top-1 at the end of the first freeze stage, an ensemble's members (as its
    summary.json lists them), and a run from our pretraining untestable for an ImageNet claim."""
    from types import SimpleNamespace as NS

    from visionbench.analysis.study_report import findings_rows
    from visionbench.commands.study import StudyRun
    from visionbench.config import resolve_config

    full = resolve_config([], ["data.name=cifar10", "finetune.stages=[{epochs: 2, freeze: head-only}, {}]"])
    ours = full.model_copy(update={"model": full.model.model_copy(update={"weights": "run:x-ourpretrain"})})
    runs = [StudyRun("m64", "s-cpu-m64", full, full=full), StudyRun("r50", "s-cpu-r50", ours, full=full)]
    curve = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.6}, {"epoch": 4, "val_acc": 0.8}]
    records = [NS(id=r.id, summary={"test_acc": t}, metrics=curve) for r, t in zip(runs, (0.86, 0.90))]
    vote = {
        "kind": "ensemble",
        "name": "s-cpu-vote",
        "top1": 0.92,
        "members": [{"id": "s-cpu-m64", "top1": 0.86}],
    }
    study = NS(name="s-cpu", spec={"findings": [
        {"claim": "vote", "check": {"better": ["vote", ["m64"]]}},
        {"claim": "unfreeze", "check": {"unfreezing_helps": ["m64"]}},
        {"claim": "r50", "check": {"better": ["r50", "m64"]}, "needs": "imagenet"},
    ]})  # fmt: skip
    _, rows = findings_rows(study, runs, records, [vote])
    assert [r[1] for r in rows] == [HOLDS, HOLDS, UNTESTABLE]
    assert "vote 92.00 vs m64 86.00" in rows[0][3] and "at the end 80.00" in rows[1][3]
    assert "60.00" in rows[1][3] and "our pretraining" in rows[2][2]


def test_the_beside_table_says_what_data_each_figure_was_made_on():
    """A figure on a lossy copy of the write-up's dataset is not set beside its figure unsaid:
    the data report's notes (data/official.py copy_note) reach the run's row."""
    from types import SimpleNamespace

    from visionbench.analysis.study_report import beside_rows

    run = SimpleNamespace(
        id="r1", key="simple_cnn", values={}, note="", differences=[], writeup={"top1": 66.71, "setting": "s"}
    )
    note = "an image-folder copy (60,000 JPEG), not the official distribution (cifar-10-python.tar.gz): lossy"
    rec = SimpleNamespace(
        id="r1",
        summary={"test_acc": 0.65, "epochs": 20},
        config={"data.name": "cifar10"},
        meta={"data_report": {"notes": [note]}},
    )
    header, (row,) = beside_rows([run], [rec])
    assert note in row[header.index("notes")] and row[header.index("gap")] == "-1.71 points"
    rec.meta = {"data_report": "damaged"}  # a damaged run.json still gives a row
    assert beside_rows([run], [rec])[1][0][header.index("notes")] == "20 epochs, cifar10"
