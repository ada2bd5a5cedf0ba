"""Build the draft notebook ``docs/design/ch4/map.ipynb`` (chapter 4, "Offline, online, self:
the map"; docs/design/schemes.md, section 4.2, item 1).

Run from the repository root: ``.venv/bin/python docs/design/ch4/build_map.py``. The notebook
is written without outputs; execute it at smoke scale to check it (see the chapter preamble).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).with_name("map.ipynb")


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str, *, tags: list[str] | None = None, caption: str = "", name: str = ""):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    if caption:
        cell.metadata["mystnb"] = {"figure": {"caption": caption, "name": name}}
    return cell


CELLS = [
    md("""
**DRAFT: claims to be confirmed against schemes_book.csv**
"""),
    md(r"""
# Offline, online, self: the map

Every student in chapters 2 and 3 had a teacher that existed before it did: a large network,
trained on its own, then frozen while the student learned from its outputs or its features.
That is **offline** distillation, and its price is easy to forget: someone had to train the
teacher first. Two other schemes do without that step. In **online** distillation several
networks learn at the same time and teach each other; in **self-distillation** a network
teaches itself, its deepest layers teaching its shallow ones, or each generation of it
teaching the next. This page draws who teaches whom in each scheme, lists the runs the
chapter's suite makes on one student, and fixes the reference point the rest of the
chapter measures against: offline KD, its gain over the student trained alone, and what
that gain cost once the teacher's own training is counted.

**What you will learn**

- the three schemes as a picture of who teaches whom: a frozen pre-trained teacher, peers
  and a gated ensemble trained together, exits and generations of one network;
- what the chapter's suite trains (every scheme on one student, three seeds each) and
  what each scheme is charged for;
- how the cost of a training run is counted in FLOPs, forward and backward, by writing the
  count yourself and checking it against `kdtutor.bench.cost.step_flops`;
- how much offline KD gains over the student alone on the book's protocol, with its
  test-set interval, and how much more it costs when the teacher is paid for.
"""),
    code(
        """
import os

# "smoke" (tests), "book" (default), "full"
SCALE = os.environ.get("KDTUTOR_SCALE", "book")
SEED = 0
# True: run the missing runs of the schemes suite (book: hours on 2 cores)
RERUN = False
""",
        tags=["parameters"],
    ),
    code("""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyBboxPatch, Patch
from myst_nb import glue
from torch.utils.flop_counter import FlopCounterMode

from kdtutor.bench.cost import step_flops, teacher_cost
from kdtutor.bench.knowledge import PRESETS, preset_data
from kdtutor.bench.report import gains_with_intervals
from kdtutor.bench.schemes import (
    SCHEMES,
    page_rows,
)
from kdtutor.data import BatchLoader, dataset_info
from kdtutor.methods import build_distiller, get_method
from kdtutor.models import build_model
from kdtutor.plots import subplots
from kdtutor.seeding import seed_everything
from kdtutor.zoo import get_recipe, load_teacher

torch.set_num_threads(1)
CHECK_CLAIMS = SCALE != "smoke"
PRESET = "smoke" if SCALE == "smoke" else "book"
preset = PRESETS[PRESET]
PAIR = preset.pairs[0]  # cnn_large -> cnn_wide_s2
N_TEST = preset.test_size
seed_everything(SEED)

# the schemes suite's rows: a tiny suite at smoke scale (one epoch on 256
# images), the committed CSV at book scale
PAGE = ["scratch", "kd", "dml2", "one", "byot", "ban"]
rows, provenance = page_rows(SCALE, PAGE, rerun=RERUN)
seeds = sorted({r["seed"] for r in rows})
print(f"{len(rows)} rows (one per scored network and seed), seeds {seeds};")
print(f"{N_TEST:,} test images")
for key in ("command", "commit", "date", "machine"):
    print(f"  {key:8} {provenance.get(key, '?')[:66]}")
"""),
    md(r"""
## Who teaches whom

**Offline.** The teacher is trained first, alone, and frozen; the student learns from its
soft targets (Hinton's KD {cite}`hinton2015distilling`, chapter {doc}`../02-principles/index`)
or from its features and relations (chapter {doc}`../03-knowledge/index`). Knowledge flows
one way, from a network that no longer changes.

**Online.** There is no teacher to begin with. In deep mutual learning (DML)
{cite}`zhang2018dml` two or more *peers* start from random weights and train together; each
minimises its cross entropy plus the KL divergence from the other peers' predictions to its
own, so each is taught by networks that are still learning. ONE {cite}`lan2018one` builds the
peers inside one network: a shared trunk feeds several copies of the last stage (the
branches), a small gate mixes their logits into an ensemble, and the ensemble teaches every
branch. KDCL {cite}`guo2020kdcl` also teaches every peer with an ensemble of all of them.

**Self.** One network teaches itself. Be Your Own Teacher (BYOT) {cite}`zhang2019byot`
attaches classifiers (exits) after the early stages; the deepest exit teaches the shallow
ones. Born-Again Networks (BAN) {cite}`furlanello2018born` train a network, then train a
fresh copy of the same architecture to match it, and repeat: generation $k$ teaches
generation $k + 1$. CS-KD {cite}`yun2020cskd` asks the network's prediction on one image to
match its own prediction on another image of the same class, and Tf-KD's self-training
{cite}`yuan2020revisiting` uses a trained copy of the student as its teacher, which is BAN's
first generation with other weights. {numref}`fig-ch4-map` draws the three schemes.
"""),
    code(
        """
TEACH, FLOW = "tab:red", "0.45"


def box(ax, x, y, text, w=2.2, h=0.9, frozen=False):
    # a network as a box; returns the midpoints of its four sides
    ax.add_patch(FancyBboxPatch(
        (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
        fc="0.82" if frozen else "#cfe2f3", ec="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)
    return {"top": (x, y + h / 2 + 0.05), "bottom": (x, y - h / 2 - 0.05),
            "left": (x - w / 2 - 0.05, y), "right": (x + w / 2 + 0.05, y)}


def arrow(ax, start, end, teach=True, both=False, rad=0.0):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(
        arrowstyle="<|-|>" if both else "-|>", shrinkA=0, shrinkB=0,
        color=TEACH if teach else FLOW, lw=2 if teach else 1,
        connectionstyle=f"arc3,rad={rad}"))


def note(ax, x, y, text, color=TEACH, **kw):
    ax.text(x, y, text, ha="center", va="center", fontsize=8, color=color,
            **kw)


fig, axes = subplots(1, 3, size=(12, 5.6))
for ax, title in zip(axes, ["offline", "online", "self"], strict=True):
    ax.set(xlim=(0, 10), ylim=(0, 10))
    ax.axis("off")
    ax.set_title(title, fontsize=13)

ax = axes[0]  # offline: a teacher trained beforehand, frozen
t = box(ax, 5, 8.0, "teacher\\n(pre-trained, frozen)", w=3.6, h=1.3,
        frozen=True)
s = box(ax, 5, 3.2, "student", w=3.0)
arrow(ax, t["bottom"], s["top"])
note(ax, 6.9, 5.6, "soft targets\\n(KD, chapters 2-3)")
note(ax, 5, 1.0, "the teacher was trained first, alone", color="black",
     style="italic")

ax = axes[1]  # online: peers teach each other; ONE's ensemble, its branches
ax.text(5, 9.6, "DML: peers", ha="center", weight="bold")
p1, p2 = box(ax, 2.5, 8.3, "peer 1"), box(ax, 7.5, 8.3, "peer 2")
arrow(ax, p1["right"], p2["left"], both=True)
note(ax, 5, 7.5, "each learns from the other")
ax.text(5, 6.4, "ONE: branches and a gated ensemble", ha="center",
        weight="bold")
ens = box(ax, 5, 5.3, "gated ensemble", w=3.2)
trunk = box(ax, 5, 0.8, "shared trunk", w=3.2)
for i, x in enumerate((1.7, 5.0, 8.3)):
    b = box(ax, x, 3.0, f"branch {i + 1}", w=2.0)
    arrow(ax, trunk["top"], b["bottom"], teach=False)
    arrow(ax, b["top"], ens["bottom"], teach=False)
    arrow(ax, ens["bottom"], b["top"], rad=0.3 if x <= 5 else -0.3)

ax = axes[2]  # self: the deepest exit teaches the others; generations
ax.text(5, 9.6, "BYOT: exits of one network", ha="center", weight="bold")
exits = [box(ax, x, 7.3, name, w=2.3) for x, name in
         ((1.7, "exit 1"), (5.0, "exit 2"), (8.3, "deepest exit"))]
stages = [box(ax, x, 5.4, f"stage {i + 1}", w=2.0)
          for i, x in enumerate((1.7, 5.0, 8.3))]
for i, (e, st) in enumerate(zip(exits, stages, strict=True)):
    arrow(ax, st["top"], e["bottom"], teach=False)
    if i:
        arrow(ax, stages[i - 1]["right"], st["left"], teach=False)
for e in exits[:2]:
    arrow(ax, exits[2]["top"], e["top"], rad=0.35)
ax.text(5, 3.9, "Born-Again: generations", ha="center", weight="bold")
gens = [box(ax, x, 2.8, f"gen {k}", w=1.7)
        for k, x in enumerate((1.2, 3.7, 6.3, 8.8))]
for k in range(1, len(gens)):
    arrow(ax, gens[k - 1]["right"], gens[k]["left"])
note(ax, 5, 1.6, "generation k teaches generation k + 1\\n"
     "(the same architecture, trained anew)")

handles = [
    plt.Line2D([], [], color=TEACH, lw=2,
               label="teaches (a distillation loss)"),
    plt.Line2D([], [], color=FLOW, lw=1, label="feeds (the forward pass)"),
    Patch(fc="#cfe2f3", ec="black", label="trained in this run"),
    Patch(fc="0.82", ec="black", label="frozen"),
]
fig.legend(handles=handles, loc="outside lower center", ncols=4)
plt.show()
""",
        caption=(
            "Who teaches whom. Offline: a teacher trained beforehand and frozen teaches the "
            "student. Online: peers trained together teach each other (DML), or a gated "
            "ensemble of branches on a shared trunk teaches every branch (ONE). Self: the "
            "deepest exit of one network teaches its shallow exits (BYOT), and each "
            "generation of a network teaches the next (Born-Again Networks). Red arrows are "
            "distillation losses, grey arrows the forward pass."
        ),
        name="fig-ch4-map",
    ),
    md(r"""
## The chapter's suite

To compare the schemes we train one student, the book protocol's `cnn_wide_s2` (24k
parameters; see {doc}`../07-comparison/comparison`), in every scheme, on the same 20,000
`shapes` images, for 20 epochs of the same SGD schedule, with seeds 0, 1 and 2. Each scheme
is a row of `kdtutor.bench.schemes.SCHEMES`: a registered method with its settings. Some
train one network, others several (peers, branches, exits, generations), and the suite
scores every network a scheme could deploy, so a DML run gives three rows: peer 1, peer 2 and
their ensemble. `kdtutor bench --suite schemes --preset book` runs it into
`data/results/schemes_book.csv`, one row per network and seed.

Each scheme is also charged for what it needed before it started. Offline KD needs the zoo
teacher (`teacher` = `zoo`), which was trained for 30 epochs on its own. Tf-KD's self mode and
the Born-Again chain need the student trained alone (`teacher` = `scratch`), which is the
`scratch` run of the same seed. The student alone for 40 and 80 epochs (`scratch_e40`,
`scratch_e80`) says what the same compute would have bought without any distillation.
"""),
    code("""
def kind(scheme):
    # offline, online or self (or the student alone)
    if scheme.method == "scratch":
        return "alone"
    if scheme.teacher == "zoo":
        return "offline"
    return "online" if get_method(scheme.method).family == "online" else "self"


networks = {}
for r in rows:
    networks.setdefault(r["scheme"], []).append(r["network"])
print(f"{'scheme':<14}{'kind':<8}{'method':<8}{'charged for':<13}"
      f"{'ep.':>4}  networks scored")
for s in SCHEMES:
    charged = {"zoo": "zoo teacher", "scratch": "scratch run"}
    nets = ", ".join(dict.fromkeys(networks.get(s.label, []))) or "-"
    print(f"{s.label:<14}{kind(s):<8}{s.method:<8}"
          f"{charged.get(s.teacher, '-'):<13}"
          f"{s.epochs or preset.epochs:>4}  {nets[:31]}")
"""),
    md(r"""
(At smoke scale the tiny suite runs only some schemes, for one epoch; the others print `-`.)

## The reference point: offline KD

Chapter {doc}`../07-comparison/comparison` measured offline KD on this protocol; the
schemes suite runs it again beside the other schemes, so every comparison in this chapter
uses the same student alone, `scratch/student`, as its baseline. The **gain** is the mean
last-epoch accuracy over the seeds minus that of the student alone. The KD run and the
run alone of the same seed start from the same weights and see the same batches, so we
compare them image by image: the interval comes from a paired bootstrap over the test
images, and McNemar's test {cite}`mcnemar1947` counts the seeds on which KD is
significantly better (or worse) than the student alone, at the 5% level.
"""),
    code("""
pair_rows = [r for r in rows
             if r["method"] in ("scratch/student", "kd/student")]
kd = gains_with_intervals(pair_rows, N_TEST, baseline="scratch/student")[0]
alone = [r["last_acc"] for r in pair_rows if r["method"] == "scratch/student"]
alone_mean = sum(alone) / len(alone)
print(f"student alone  {alone_mean:6.2f} % (seeds: {len(alone)})")
print(f"offline KD     {kd['acc']:6.2f} ± {kd['acc_std']:.2f} %")
print(f"gain {kd['gain']:+.2f} points, 95% interval over the test images "
      f"[{kd['low']:+.2f}, {kd['high']:+.2f}]")
print(f"McNemar, seed by seed: better on {kd['better']}, worse on "
      f"{kd['worse']} of {kd['seeds']} seeds")
glue("kd_gain", kd["gain"], display=False)
glue("kd_low", kd["low"], display=False)
glue("kd_high", kd["high"], display=False)
glue("alone_acc", alone_mean, display=False)
glue("kd_acc", kd["acc"], display=False)
"""),
    md(r"""
On this protocol offline KD gains {glue:text}`kd_gain:.2f` points over the student alone
({glue:text}`alone_acc:.2f`% to {glue:text}`kd_acc:.2f`%), with a test-set interval from
{glue:text}`kd_low:.2f` to {glue:text}`kd_high:.2f` points.

## What a run costs

A gain means little without its price. We count the price in floating-point operations
(FLOPs), as `kdtutor.models.summary.model_summary` does: matrix products and convolutions,
a multiply-add counting 2, element-wise operations ignored. One training step runs the
forward pass and then the backward pass, which for each layer computes two products as
large as the forward one (the gradient of the layer's input and of its weights), so a step
costs about three forward passes, a little less because the first layer needs no input
gradient. PyTorch's `FlopCounterMode` counts every product that runs inside it, forward and
backward alike. Here is a step of the student counted by hand, checked against
`kdtutor.bench.cost.step_flops`, which counts whatever a method's own training step does
(two peers, a gate, extra exits):
"""),
    code("""
train = preset_data(preset, "train")
batch = next(iter(BatchLoader(train, preset.batch_size)))


def my_step_flops(model, x, y):
    # FLOPs of one training step: forward, loss, backward
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad()
    return counter.get_total_flops()


def my_forward_flops(model, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops()


seed_everything(SEED)
student = build_model(PAIR.student, num_classes=10)
B = len(batch.y)
mine = my_step_flops(student, batch.x, batch.y)
package = step_flops(build_distiller("scratch", student), batch)
torch.testing.assert_close(torch.tensor(mine), torch.tensor(package))
forward = my_forward_flops(student, batch.x)
print(f"one step on {B} images: {mine / 1e6:.1f} MFLOPs, "
      f"{mine / forward:.2f} x the forward pass")
"""),
    md(r"""
FLOPs grow linearly with the number of images, so a run of $E$ epochs over $N$ images costs

$$
C_\mathrm{run} = \frac{F_\mathrm{step}(B)}{B}\, N E ,
$$

and offline KD adds one forward pass of the teacher over the $N$ training images, to fill
its cache of teacher outputs (the teacher never runs again during the epochs). The teacher's
own training, 30 epochs over the 20,000 images in the zoo's recipe, is what KD needed before
it started: the suite's `prior_flops`. All three numbers in the suite's rows are checked
here against our own count.
"""),
    code("""
scratch_row = next(r for r in rows if r["method"] == "scratch/student")
kd_row = next(r for r in rows if r["method"] == "kd/student")
N, E = len(train), scratch_row["epochs"]
run = mine / B * N * E
teacher = load_teacher(PAIR.teacher)
fill = N * my_forward_flops(teacher, batch.x[:1])
recipe = get_recipe(PAIR.teacher)
big = build_model(recipe.model, num_classes=10).train()
x2, y2 = batch.x[:2], batch.y[:2]  # the count is linear in the batch
prior = (my_step_flops(big, x2, y2) / 2 * dataset_info(recipe.dataset).sizes[0]
         * recipe.train["epochs"])


def check(mine, suite):
    torch.testing.assert_close(torch.tensor(float(mine), dtype=torch.float64),
                               torch.tensor(float(suite), dtype=torch.float64))


check(run, scratch_row["train_flops"])
check(run + fill, kd_row["train_flops"])
check(prior, kd_row["prior_flops"])
check(prior, teacher_cost(PAIR.teacher).flops)
for name, value in (("student alone, one run", run),
                    ("KD run (incl. the cache fill)", run + fill),
                    ("the teacher's training", prior)):
    print(f"{name:<30} {value / 1e12:8.3f} TFLOPs")
"""),
    md(r"""
So what did KD's gain cost? It depends on whether the teacher is charged. **In full**: this
student is the only one the teacher was trained for. **Amortised**: the teacher serves the
protocol's three students (`cnn_wide_s2`, `cnn_tiny_s2`, `resnet8_half_s2`), so each pays a
third of it. **Free**: the teacher existed anyway (downloaded, or trained for deployment),
and only its forward passes over the training images are paid. {numref}`fig-ch4-kd-cost` sets
the three beside the student alone, in FLOPs and in seconds. Seconds depend on the machine
and its load (the zoo teacher was timed on 2 threads, the suite's runs on one), which is why
the chapter compares costs in FLOPs.
"""),
    code(
        """
ways = {
    "student alone": (run, 0.0),
    "KD, teacher free": (run + fill, 0.0),
    "KD, teacher amortised (1/3)": (run + fill, prior / 3),
    "KD, teacher charged": (run + fill, prior),
}
seconds = {
    "student alone": (scratch_row["train_seconds"], 0.0),
    "KD, teacher free": (kd_row["train_seconds"], 0.0),
    "KD, teacher amortised (1/3)": (kd_row["train_seconds"],
                                    kd_row["prior_seconds"] / 3),
    "KD, teacher charged": (kd_row["train_seconds"], kd_row["prior_seconds"]),
}
fig, axes = subplots(1, 2, size=(11, 3.4), sharey=True)
for ax, table, scale, unit in ((axes[0], ways, 1e12, "TFLOPs"),
                               (axes[1], seconds, 1.0, "seconds")):
    names = list(table)
    own = [table[n][0] / scale for n in names]
    before = [table[n][1] / scale for n in names]
    ax.barh(names, own, color="tab:blue", label="the run")
    ax.barh(names, before, left=own, color="0.6",
            label="the teacher's training")
    for y, (a, b) in enumerate(zip(own, before, strict=True)):
        ax.text(a + b, y, f" {a + b:.3g}", va="center", fontsize=9)
    ax.set_xlabel(f"training cost ({unit}, seed {scratch_row['seed']})")
    ax.margins(x=0.2)
axes[0].invert_yaxis()
axes[0].set_ylabel("scheme")
axes[0].legend(loc="upper right")
plt.show()
ratio = {n: (a + b) / run for n, (a, b) in ways.items()}
for name, r in ratio.items():
    print(f"{name:<28} {r:6.1f} x the student alone (FLOPs)")
glue("teacher_tflops", prior / 1e12, display=False)
glue("teacher_student_ratio", fill / N / (forward / B), display=False)
glue("run_tflops", run / 1e12, display=False)
glue("kd_free_ratio", ratio["KD, teacher free"], display=False)
glue("kd_amortised_ratio", ratio["KD, teacher amortised (1/3)"], display=False)
glue("kd_charged_ratio", ratio["KD, teacher charged"], display=False)
# students needed to share the teacher before KD costs less than the student
# alone for 80 epochs (FLOPs are linear in the epochs: 4 runs of 20)
share_e80 = prior / (4 * run - (run + fill))
glue("share_e80", share_e80, display=False)
""",
        caption=(
            "The training cost of the student alone and of offline KD, with the teacher's "
            "own training charged in full, amortised over the protocol's three students, or "
            "free, in FLOPs (left) and seconds (right). Charged in full, the teacher costs "
            "many times the student's whole run."
        ),
        name="fig-ch4-kd-cost",
    ),
    md(r"""
With the teacher free, KD costs {glue:text}`kd_free_ratio:.2f` times a run of the student
alone: the cache fill is one forward pass over the training images of a teacher whose
forward pass costs {glue:text}`teacher_student_ratio:.0f` times the student's. Charged in full, the teacher's
{glue:text}`teacher_tflops:.1f` TFLOPs make KD {glue:text}`kd_charged_ratio:.0f` times as
expensive as the student alone; amortised over three students,
{glue:text}`kd_amortised_ratio:.0f` times. That is the question online and self-distillation
answer: can a student gain without paying for a teacher at all?

The claim below re-reads the suite's rows: offline KD, the reference point, beats the
student alone on the test images.
"""),
    code(
        """
if CHECK_CLAIMS:
    assert kd["low"] > 0, (
        f"KD's gain {kd['gain']:+.2f} has interval low {kd['low']:+.2f} <= 0"
    )
    assert kd["worse"] == 0, f"KD is worse than scratch on {kd['worse']} seeds"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: offline KD beats the student alone,")
print(f"gain {kd['gain']:+.2f} points, 95% interval [{kd['low']:+.2f}, "
      f"{kd['high']:+.2f}],")
print(f"significantly better on {kd['better']} of {kd['seeds']} seeds")
""",
        tags=["claim"],
    ),
    md(r"""
## The map of this chapter

| Section | What you do | What you take away |
| --- | --- | --- |
| {doc}`map` | draw who teaches whom; count what a run costs; re-read offline KD's gain and cost | the three schemes, and the reference point the chapter measures against |
| {doc}`online` | write DML's two losses from scratch and check them against the package; follow both peers' learning curves; compare peers, ensembles, ONE's branches and KDCL's targets from the suite | whether networks learning together can replace a teacher, and what their ensemble adds |
| {doc}`self` | watch BYOT's exits grow more accurate with depth; follow Born-Again generations and their ensembles; write CS-KD's loss | what a network gains from teaching itself, and at what cost in extra runs |
| {doc}`equal-cost` | put every scheme on one axis of training FLOPs beside the student trained longer; test each against the cheapest run alone that cost as much | which gains survive when compute is equal, and how our gains compare with the published ones |
"""),
    md(r"""
## Exercises
"""),
    md(r"""

````{exercise} The FLOPs of a DML step
:label: ex-ch4-dml-flops

DML in its sequential form (the paper's algorithm) trains two peers: one forward pass of
both, a step of peer 1, then a forward pass of peer 1 again (without gradients) so that
peer 2 learns from peer 1's *updated* predictions, then a step of peer 2. Predict the FLOPs
of one such step on `batch` from `my_step_flops` and `my_forward_flops` of the student, then
check your prediction with `step_flops(build_distiller("dml", student, None, {},
input_shape=(3, 32, 32)), batch)`. What does a 20-epoch DML run cost, in runs of the
student alone?
````

````{solution} ex-ch4-dml-flops
:class: dropdown

Each peer is trained once per step (a forward and a backward pass, like the student
alone), and peer 1 runs one more forward pass:

```python
predicted = 2 * my_step_flops(student, batch.x, batch.y) + my_forward_flops(
    student, batch.x
)
dml = build_distiller("dml", student, None, {}, input_shape=(3, 32, 32))
assert predicted == step_flops(dml, batch)
print(predicted / my_step_flops(student, batch.x, batch.y))
```

A forward pass is a little over a third of a step, so a DML run of two peers costs about
two and a third runs of the student alone, whichever peer you deploy.
````
"""),
    md(r"""
````{exercise} How many students must share the teacher?
:label: ex-ch4-share

Training the student alone for 80 epochs costs four 20-epoch runs. How many students must
share the zoo teacher before offline KD, with the teacher amortised over them, costs less
than that? Write it as a formula in $C_\mathrm{teacher}$, $C_\mathrm{run}$ (the student
alone, 20 epochs) and $C_\mathrm{KD}$ (the KD run with its cache fill), and evaluate it
with `prior`, `run` and `run + fill`.
````

````{solution} ex-ch4-share
:class: dropdown

KD amortised over $n$ students costs $C_\mathrm{KD} + C_\mathrm{teacher}/n$, which is below
$4\,C_\mathrm{run}$ when

$$
n > \frac{C_\mathrm{teacher}}{4\,C_\mathrm{run} - C_\mathrm{KD}} .
$$

With this suite's counts that is more than {glue:text}`share_e80:.1f` students
(`prior / (4 * run - (run + fill))`). A teacher pays for itself in FLOPs only when many
students share it, or when it exists anyway.
````
"""),
    md(r"""
````{exercise} Tf-KD self and Born-Again, side by side
:label: ex-ch4-tfkd-ban

Tf-KD's self-training and the first Born-Again generation both train a fresh student with
a trained copy of itself as the teacher. Read `kdtutor.methods.tfkd` and
`kdtutor.methods.ban` (or `kdtutor methods`): which teacher does each use in the suite, what
are their loss weights and temperatures, and what is each charged for? Which of the two
would you expect to gain more on this protocol, and why?
````

````{solution} ex-ch4-tfkd-ban
:class: dropdown

In the suite both are taught by the `scratch` run of the same seed and both are charged for
it (`prior_flops` is that run's cost), so each costs about two runs of the student alone.
They differ only in the loss: Tf-KD self weights the KD term by $\alpha = 0.95$ and the
cross entropy by $1 - \alpha$, at $T = 6$ (with the authors' multiplier, 0.5 here), while BAN
keeps KD's weights (0.1 on the cross entropy, 0.9 on the KD term, $T = 4$), so that it
differs from offline KD only in its teacher; Born-Again then continues to generations 2 and
3, each charged with all earlier ones. A teacher as small as the student
carries little dark knowledge beyond the labels; a stronger weight on it (Tf-KD) is a
stronger regulariser, which may help or hurt a 24k-parameter student that under-fits in 20
epochs. Compare `tfkd_self/student` and `ban/gen1` in the suite's CSV.
````
"""),
    md(r"""
## Summary

- Offline distillation uses a teacher trained beforehand and frozen; online distillation
  trains peers (DML, KDCL) or branches with a gated ensemble (ONE) together, each teaching
  the others; self-distillation lets a network teach itself, deep exits teaching shallow
  ones (BYOT), generations teaching the next (Born-Again), or images teaching others of
  their class (CS-KD).
- A run's cost is counted in FLOPs of its training steps, forward and backward
  (`kdtutor.bench.cost.step_flops`), plus whatever it needed before it started.
- Offline KD gains {glue:text}`kd_gain:.2f` points over the student alone here, but with its
  teacher's training charged in full it costs {glue:text}`kd_charged_ratio:.0f` times as much.
  The rest of the chapter asks whether teacher-free schemes gain as much, and which gains
  survive when every scheme is charged the same.

## References

- {cite}`kaleem2024review`, section 4 (distillation schemes: offline, online,
  self-distillation).
- {cite}`hinton2015distilling`: offline KD.
- {cite}`zhang2018dml`: deep mutual learning; {cite}`lan2018one`: ONE;
  {cite}`guo2020kdcl`: KDCL.
- {cite}`zhang2019byot`: Be Your Own Teacher; {cite}`furlanello2018born`: Born-Again
  Networks; {cite}`yun2020cskd`: CS-KD; {cite}`yuan2020revisiting`: Tf-KD.
- {cite}`mcnemar1947`: McNemar's test.
"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    return nb


if __name__ == "__main__":
    nbformat.write(build(), OUT)
    print(f"wrote {OUT}")
