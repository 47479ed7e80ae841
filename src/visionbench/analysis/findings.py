"""A write-up's conclusions, checked on a study's results: each claim of a study file's
`findings:` gets a verdict - holds / does not hold / not distinguishable from seed noise / not
testable at this scale - with why, and the numbers behind it.

A claim's `check` is one of (A, B: a run selector - a run key, an ensemble name, or a mapping
of `run:` and grid values such as {run: dropout, model.kwargs.rate: 0.1}; a list of selectors
stands for the best of them):

    better: [A, B]                A's test top-1 beats B's (each: KEY pairs A and B by a grid key)
    best: A, among: B             A beats every other cell B matches (default: every run)
    no_better: [A, B]             A does not beat B beyond the noise
    order: [A, B, C]              A beats B beats C
    at_least: {run: A, top1: 98.8}
    unfreezing_helps: [A, ...]    each run's validation top-1 at the end improves on the end of
                                  its first (frozen) stage
    unstable: {run: A, spread: 2} the study's lr-find on A: its suggestions over the repeats
                                  differ by at least x2 (largest / smallest)

A gap is told from noise by the seeds: cells that differ only in `seed` are repeats of one
setting. With >= 2 seeds a side, a gap must exceed the larger seed-to-seed standard deviation;
with one seed, the claim's `noise` (points, default NOISE_FLOOR), and a gap under it is "not
distinguishable from seed noise" until the study runs >= 2 seeds. A claim about pretrained
networks says `needs: imagenet`: a run that started from our own pretraining instead (no
ImageNet weights here) cannot test it."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field

HOLDS, FAILS, NOISE, UNTESTABLE = (
    "holds",
    "does not hold",
    "not distinguishable from seed noise",
    "not testable at this scale",
)
NOISE_FLOOR = 1.0  # points of top-1: the seed-to-seed spread of a short CIFAR-10 run, at least
FINDING_KEYS = ("claim", "check", "noise", "needs")
CHECKS = ("better", "best", "no_better", "order", "at_least", "unfreezing_helps", "unstable")


@dataclass
class Cell:
    """One run (or ensemble) of the study as a claim sees it."""

    key: str  # the run's key in the study file, or the ensemble's name
    values: dict = field(default_factory=dict)  # its grid values, dotted (model.kwargs.rate)
    top1: float | None = None  # test top-1, %
    stage_top1: float | None = None  # validation top-1 at the end of its first freeze stage, %
    final_val: float | None = None  # validation top-1 at the end, %
    untestable: str = ""  # why it cannot test the write-up's claim here (e.g. other data than the write-up's)
    weights: str = ""  # set when it started from other weights than it asked for (our pretraining)


@dataclass
class Group:
    """The cells of one setting: one per seed."""

    label: str
    cells: list[Cell]

    def scores(self, attr: str = "top1") -> list[float]:
        return [getattr(c, attr) for c in self.cells if getattr(c, attr) is not None]

    def mean(self, attr: str = "top1") -> float:
        return statistics.fmean(self.scores(attr))

    def show(self, attr: str = "top1") -> str:
        s = self.scores(attr)
        if len(s) > 1:
            return f"{self.label} {self.mean(attr):.2f} ± {statistics.stdev(s):.2f} ({len(s)} seeds)"
        return f"{self.label} {s[0]:.2f}"


class Untestable(Exception):
    """A claim that cannot be tested at this scale, and why."""


def flat_values(values: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in values.items():
        out |= flat_values(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {prefix + k: v}
    return out


def label(cell: Cell) -> str:
    values = {k: v for k, v in cell.values.items() if k != "seed"}
    return cell.key + (" (" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")" if values else "")


def groups(cells: list[Cell], selector) -> list[Group]:
    """The settings a selector matches (a list: each of its selectors), seeds pooled."""
    if isinstance(selector, list):
        return [g for s in selector for g in groups(cells, s)]
    want = {"run": selector} if isinstance(selector, str) else dict(selector)
    run = want.pop("run", None)
    matched = [c for c in cells if (run is None or c.key == run) and matches(c, want)]
    if not matched:
        raise Untestable(f"no run {selector_text(selector)} at this scale")
    by_label: dict[str, list[Cell]] = {}
    for c in matched:
        by_label.setdefault(label(c), []).append(c)
    return [Group(k, v) for k, v in by_label.items()]


def matches(cell: Cell, want: dict) -> bool:
    values = flat_values(cell.values)
    return all(values.get(k) == v for k, v in flat_values(want).items())


def selector_text(selector) -> str:
    return selector if isinstance(selector, str) else ", ".join(f"{k}={v}" for k, v in selector.items())


def one(cells: list[Cell], selector) -> Group:
    found = groups(cells, selector)
    if len(found) != 1:
        raise ValueError(f"{selector_text(selector)} matches {len(found)} settings, not one")
    return found[0]


def testable(*found: Group, attr: str = "top1") -> None:
    for g in found:
        why = next((c.untestable for c in g.cells if c.untestable), "")
        if why:
            raise Untestable(f"{g.label}: {why}")
        if not g.scores(attr):
            raise Untestable(f"{g.label} has no result")


def best_of(found: list[Group], attr: str = "top1") -> Group:
    return max(found, key=lambda g: g.mean(attr))


def gap(a: Group, b: Group, floor: float, attr: str = "top1") -> tuple[str, str]:
    """Whether a beats b, told from noise: (verdict, the numbers and the noise used)."""
    testable(a, b, attr=attr)
    diff = a.mean(attr) - b.mean(attr)
    n = min(len(a.scores(attr)), len(b.scores(attr)))
    if n >= 2:
        noise = max(statistics.stdev(a.scores(attr)), statistics.stdev(b.scores(attr)))
        against = f"seed spread {noise:.2f}"
    else:
        noise, against = floor, f"one seed: noise floor {floor:g} points"
    numbers = f"{a.show(attr)} vs {b.show(attr)}: {diff:+.2f} points ({against})"
    if diff > noise:
        return HOLDS, numbers
    if diff < -noise:
        return FAILS, numbers
    return NOISE, numbers + (" - needs >= 2 seeds a side" if n < 2 else "")


def combine(parts: list[tuple[str, str]]) -> tuple[str, str]:
    """Several comparisons that must all hold: one failing fails the claim, one in noise
    leaves it in noise."""
    verdicts = [v for v, _ in parts]
    verdict = FAILS if FAILS in verdicts else NOISE if NOISE in verdicts else HOLDS
    return verdict, "; ".join(n for _, n in parts)


def check_better(check: dict, cells: list[Cell], floor: float) -> tuple[str, str]:
    a_sel, b_sel = check["better"]
    each = check.get("each")
    if not each:
        return gap(one(cells, a_sel), best_of(groups(cells, b_sel)), floor)
    parts = []
    for a in groups(cells, a_sel):
        value = flat_values(a.cells[0].values).get(each)
        pair = b_sel if isinstance(b_sel, str) else {**b_sel, each: value}
        parts.append(gap(a, one(cells, pair), floor))
    return combine(parts)


def check_best(check: dict, cells: list[Cell], floor: float) -> tuple[str, str]:
    a = one(cells, check["best"])
    others = [
        g for g in groups(cells, check.get("among") or sorted({c.key for c in cells})) if g.label != a.label
    ]
    return gap(a, best_of(others), floor)


def check_no_better(check: dict, cells: list[Cell], floor: float) -> tuple[str, str]:
    a_sel, b_sel = check["no_better"]
    verdict, numbers = gap(one(cells, a_sel), best_of(groups(cells, b_sel)), floor)
    # "no better": a gap inside the noise is what the claim says; only a clear win refutes it
    return (FAILS if verdict == HOLDS else HOLDS), numbers


def check_order(check: dict, cells: list[Cell], floor: float) -> tuple[str, str]:
    chain = [one(cells, s) for s in check["order"]]
    return combine([gap(a, b, floor) for a, b in zip(chain, chain[1:])])


def check_at_least(check: dict, cells: list[Cell], floor: float) -> tuple[str, str]:
    a, target = one(cells, check["at_least"]["run"]), check["at_least"]["top1"]
    testable(a)
    numbers = f"{a.show()} against {target:g}"
    if a.mean() >= target:
        return HOLDS, numbers
    if a.mean() > target - floor:
        return NOISE, numbers + f" (within the {floor:g}-point noise)"
    return FAILS, numbers


def check_unfreezing(check: dict, cells: list[Cell], floor: float) -> tuple[str, str]:
    parts = []
    for sel in check["unfreezing_helps"]:
        g = one(cells, sel)
        frozen = Group(f"{g.label} after its frozen stage", g.cells)
        final = Group(f"{g.label} at the end", g.cells)
        testable(frozen, attr="stage_top1")
        testable(final, attr="final_val")
        frozen_cells = [Cell(c.key, c.values, top1=c.stage_top1) for c in g.cells]
        final_cells = [Cell(c.key, c.values, top1=c.final_val) for c in g.cells]
        parts.append(gap(Group(final.label, final_cells), Group(frozen.label, frozen_cells), floor))
    verdict, numbers = combine(parts)
    return verdict, numbers + " (validation top-1)"


def check_unstable(check: dict, steps: list[dict], cells: list[Cell]) -> tuple[str, str]:
    opts = check["unstable"]
    run, threshold, kind = opts["run"], opts.get("spread", 2.0), opts.get("suggestion", "valley")
    testable(one(cells, run))
    # a step names the run by its id, <study>-<scale>-<key>
    found = [s for s in steps if s.get("kind") == "lr_find" and str(s.get("run", "")).endswith(f"-{run}")]
    if not found:
        raise Untestable(f"no lr-find step on {run} at this scale")
    s = found[0]["suggestions"].get(kind) or {}
    if not s.get("spread"):
        raise Untestable(f"the lr-find on {run} made no '{kind}' suggestion")
    numbers = (
        f"{kind} suggestions over the repeats: median {s['median']:.2e}, "
        f"largest / smallest x{s['spread']:.2f} (unstable: >= x{threshold:g})"
    )
    return (HOLDS if s["spread"] >= threshold else FAILS), numbers


def evaluate(findings: list[dict], cells: list[Cell], steps: list[dict] | None = None) -> list[dict]:
    """Each claim with its verdict, why, and the numbers: [{claim, verdict, why, numbers}]."""
    out = []
    for finding in findings:
        check, floor = finding["check"], finding.get("noise", NOISE_FLOOR)
        kind = next(k for k in CHECKS if k in check)
        if finding.get("needs") == "imagenet":  # our pretraining does not test a claim about ImageNet's
            cells = [dataclasses.replace(c, untestable=c.untestable or c.weights) for c in cells]
        try:
            if kind == "unstable":
                verdict, numbers = check_unstable(check, steps or [], cells)
            else:
                verdict, numbers = CHECKERS[kind](check, cells, floor)
            why = WHY[verdict]
        except Untestable as e:
            verdict, numbers, why = UNTESTABLE, "-", str(e)
        out.append({"claim": finding["claim"], "verdict": verdict, "why": why, "numbers": numbers})
    return out


CHECKERS = {
    "better": check_better,
    "best": check_best,
    "no_better": check_no_better,
    "order": check_order,
    "at_least": check_at_least,
    "unfreezing_helps": check_unfreezing,
}
WHY = {
    HOLDS: "the gap exceeds the noise",
    FAILS: "the gap goes the other way beyond the noise",
    NOISE: "the gap is smaller than the seed-to-seed noise",
}


def check_finding(finding, where: str) -> None:
    """A study file's finding is {claim: text, check: {ONE_OF_CHECKS: ...}, noise: points,
    needs: imagenet}:
    anything else is an error naming the nearest valid key (the study loader calls this)."""
    from ..errors import VisionbenchError, did_you_mean

    if not isinstance(finding, dict) or not isinstance(finding.get("claim"), str):
        raise VisionbenchError(
            f"a finding must be a mapping with a claim, got {finding!r}",
            where=where,
            fix="e.g. - {claim: 'A beats B', check: {better: [A, B]}}",
        )
    for key in finding:
        if key not in FINDING_KEYS:
            raise VisionbenchError(
                f"finding '{finding['claim']}': unknown key '{key}'.{did_you_mean(key, FINDING_KEYS)}",
                where=where,
            )
    if finding.get("needs") not in (None, "imagenet"):
        raise VisionbenchError(
            f"finding '{finding['claim']}': needs: {finding['needs']!r} is not known",
            where=where,
            fix="needs: imagenet",
        )
    check = finding.get("check")
    kinds = [k for k in check or {} if k in CHECKS]
    extra = [k for k in check or {} if k not in (*CHECKS, "each", "among")]
    if not isinstance(check, dict) or len(kinds) != 1 or extra:
        bad = (extra or ["(none)"])[0]
        raise VisionbenchError(
            f"finding '{finding['claim']}': check needs exactly one of {', '.join(CHECKS)}; got '{bad}'.{did_you_mean(bad, CHECKS)}",
            where=where,
        )


def named_runs(check: dict) -> list[str]:
    """The run keys (or ensemble names) a check names: strings, and `run:` in mappings."""
    names: list[str] = []

    def walk(node):
        if isinstance(node, str):
            names.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict) and "run" in node:
            walk(node["run"])

    for kind, arg in check.items():
        if kind in ("each", "suggestion"):
            continue
        if kind in ("at_least", "unstable"):
            walk(arg.get("run") if isinstance(arg, dict) else None)
        else:
            walk(arg)
    return names


def check_findings(findings, known: list[str], where: str) -> None:
    """Every finding well formed and naming only runs or ensembles the study has."""
    from ..errors import VisionbenchError, did_you_mean

    if findings is None:
        return
    if not isinstance(findings, list):
        raise VisionbenchError("findings: must be a list of {claim, check}", where=where)
    for finding in findings:
        check_finding(finding, where)
        for name in named_runs(finding["check"]):
            if name not in known:
                raise VisionbenchError(
                    f"finding '{finding['claim']}': no run or ensemble '{name}'.{did_you_mean(name, known)}",
                    where=where,
                )
