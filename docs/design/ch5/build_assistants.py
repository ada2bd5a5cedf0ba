"""Build the draft notebook ``docs/design/ch5/assistants.ipynb`` (chapter 5, "Teacher
assistants"; docs/design/architecture.md, section 5, item 3).

Run from the repository root: ``.venv/bin/python docs/design/ch5/build_assistants.py``. The
notebook is written next to this script, without outputs; execute it with
``KDTUTOR_SCALE=smoke`` (a tiny suite in a temporary folder) or at book scale, where it reads
``data/results/architecture_book.csv`` and stops with the commands that make the rows it
lacks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
OUT = HERE / "assistants.ipynb"

cells: list[nbformat.NotebookNode] = []


def md(text: str) -> None:
    cells.append(new_markdown_cell(text.strip("\n")))


def code(text: str, *, tags: list[str] | None = None) -> None:
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    cells.append(cell)


def figure(text: str, name: str, caption: str) -> None:
    cell = new_code_cell(text.strip("\n"))
    cell.metadata["mystnb"] = {"figure": {"caption": " ".join(caption.split()), "name": name}}
    cells.append(cell)


# ----------------------------------------------------------------------------------------------
md("""
**DRAFT: claims to be confirmed against architecture_book.csv**

Every `claim` cell is a candidate from the chapter plan (docs/design/architecture.md,
section 5, item 3); the prose around the numbers was written before the book-scale rows
existed and must be re-read once the suite has run.
""")

md(r"""
# Teacher assistants: distilling in steps

If a student cannot follow a teacher that is too far ahead ({doc}`capacity-gap`), give it a
teacher in between. Mirzadeh et al. {cite}`mirzadeh2020takd` distil the large teacher into
a network of intermediate size, the *teacher assistant* (TA), and the student from the TA:
Teacher Assistant Knowledge Distillation, TAKD. Nothing in the loss changes; every step is
Hinton's KD {cite}`hinton2015distilling`. What changes is the *path* the knowledge takes,
and with several assistants there are many paths: TAKD's authors report that the path
through every assistant works best. Cho and Hariharan {cite}`cho2019efficacy` disagree:
in their experiments a sequence of KD steps does not close the gap. This page writes a
chain from scratch, runs the four paths through two assistants on the book's protocol, and
counts what each path costs.

**What you will learn**

- that a TAKD step is exactly KD's loss, and how the authors' code computes it differently;
- to write the loop of a distillation chain and check it against `kdtutor.chain.fit_chain`;
- to compare every path from a teacher to a student through a set of assistants, paired
  with direct KD image by image;
- what a path costs in training FLOPs, with and without the teacher's own training;
- how TAKD's rule for the assistant's size fares on our family of networks.
""")

code(
    r"""
import os

# "smoke" (tests), "book" (default), "full"
SCALE = os.environ.get("KDTUTOR_SCALE", "book")
SEED = 0
# True: run the architecture suite's missing rows of this page (book: hours)
RERUN = False
""",
    tags=["parameters"],
)

code(r"""
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyBboxPatch
from myst_nb import glue

from kdtutor.bench.architecture import (
    FAMILY,
    PUBLISHED_ARCHITECTURE,
    TEACHER,
    page_rows,
)
from kdtutor.bench.knowledge import PRESETS, method_hparams, preset_data
from kdtutor.bench.report import gains_with_intervals
from kdtutor.chain import chain_paths, fit_chain
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.plots import subplots
from kdtutor.seeding import seed_everything
from kdtutor.specs import parse_model_spec
from kdtutor.train import fit
from kdtutor.zoo import load_teacher

torch.set_num_threads(1)
CHECK_CLAIMS = SCALE != "smoke"
PRESET = "smoke" if SCALE == "smoke" else "book"
preset = PRESETS[PRESET]
N_TEST = preset.test_size
SEEDS = list(preset.seeds)
STUDENT = "cnn_wide_s2"
seed_everything(SEED)

# the four paths through the assistants w16 and w8, and the same two
# architectures as zoo teachers trained alone (kd_w16, kd_w8)
PATHS = {"kd_w32": (), "takd_w16": ("w16",), "takd_w8": ("w8",),
         "takd_w16_w8": ("w16", "w8")}  # fmt: skip
LABELS = ["scratch", *PATHS, "kd_w16", "kd_w8"]
# the architecture suite's rows: a tiny suite at smoke scale (one epoch on
# 256 images, in a temporary folder), the committed CSV at book scale, which
# stops with the commands that make the rows it lacks
rows, provenance = page_rows(SCALE, LABELS, rerun=RERUN)
print(f"{len(rows)} rows (one per trained network and seed), seeds {SEEDS},")
print(f"{N_TEST:,} test images")
for key in ("command", "commit", "date", "machine"):
    print(f"  {key:8} {provenance.get(key, '?')[:66]}")
""")

# ----------------------------------------------------------------------------------------------
md(r"""
## A path, not a loss

TAKD trains the assistant by KD from the teacher and then the student by KD from the
assistant. Each step minimises the loss of chapter 2, with the step's teacher $t$ (the
teacher for the first assistant, the previous network after it):

$$
\mathcal{L} = (1 - \lambda)\,\mathrm{CE}(z_s, y)
    + \lambda\,\tau^2\,\frac{1}{B}\sum_{i=1}^{B}
      \mathrm{KL}\big(p_t^\tau(x_i) \,\|\, p_s^\tau(x_i)\big),
\qquad p^\tau = \mathrm{softmax}(z / \tau),
$$

with KD's settings everywhere in this book: $1 - \lambda = 0.1$, $\lambda = 0.9$ and
$\tau = 4$. So `takd` is `kd` with another teacher, which the next cell checks on one batch,
along with the form the authors' code uses: `nn.KLDivLoss()` with its default reduction
averages over the batch *and* the classes, so their KD term is ours divided by the number of
classes $K$ (`kl_reduction="elementwise"`).
""")

code(r"""
def my_step_loss(zs, zt, y, T=4.0, ce_weight=0.1, kd_weight=0.9,
                 per_class=False):  # fmt: skip
    # one step of a TAKD path: KD's loss from the step's teacher logits zt
    log_ps = F.log_softmax(zs / T, dim=1)
    log_pt = F.log_softmax(zt / T, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean()
    if per_class:  # the authors' code: KLDivLoss's mean over classes too
        kl = kl / zs.shape[1]
    return ce_weight * F.cross_entropy(zs, y) + kd_weight * T * T * kl


train = preset_data(preset, "train")
test = preset_data(preset, "test")
x, y = train.batch(torch.arange(64))
teacher = load_teacher(TEACHER.removeprefix("zoo:"))
spec = parse_model_spec(FAMILY["w8"])
seed_everything(SEED)
assistant = build_model(spec.name, num_classes=10, **spec.options)
with torch.no_grad():  # losses only, no training in this cell
    zt = teacher(x)
    for reduction in ("batchmean", "elementwise"):
        takd = build_distiller("takd", assistant, teacher,
                               {"kl_reduction": reduction})  # fmt: skip
        zs, losses = takd(x, y)
        mine = my_step_loss(zs, zt, y,
                            per_class=reduction == "elementwise")  # fmt: skip
        torch.testing.assert_close(mine, sum(losses.values()))
        print(f"takd, {reduction:<11}: {float(mine):.4f} (by hand and "
              "package)")  # fmt: skip
    _, kd_losses = build_distiller("kd", assistant, teacher)(x, y)
    torch.testing.assert_close(sum(kd_losses.values()),
                               my_step_loss(zs, zt, y))  # fmt: skip
    # the code's nn.KLDivLoss(): the mean over all B x K elements of the sum
    log_ps, pt = F.log_softmax(zs / 4, 1), F.softmax(zt / 4, 1)
    code_kl = F.kl_div(log_ps, pt, reduction="sum") / zs.numel()
    torch.testing.assert_close(
        my_step_loss(zs, zt, y, per_class=True),
        0.1 * F.cross_entropy(zs, y) + 0.9 * 16 * code_kl,
    )
print("kd's loss equals takd's; the code's form is the KL's element mean")
""")

md(r"""
## A chain from scratch

A path is a list of networks, the student last. Each is built, distilled from the one
before, and frozen to teach the next. One choice matters for comparing paths: every
network of a path is initialised from the *same seed* as the student of direct KD, and all
see the same batches. The student at the end of a path then starts from exactly the weights
of the `kd_w32` student of that seed, and the two differ only in who taught them. The loop
below is `kdtutor.chain.fit_chain`'s, without its checks and its store (which saves every
trained stage, so two paths that share a prefix, like $T \to w16 \to S$ and
$T \to w16 \to w8 \to S$, train it once). We check it against `fit_chain` on the smoke
preset's 256 images, one epoch per stage: every stage's weights must agree.
""")

code(r"""
FIT = dict(batch_size=preset.batch_size, lr=preset.lr,
           schedule=preset.schedule, milestones=preset.milestones,
           augment=preset.augment, **preset.train)  # fmt: skip


def my_chain(teacher, path, train, test, seed, epochs):
    # train the networks of `path` in turn, each distilled from the last
    previous, stages = teacher.eval(), []
    for spec in path:
        parsed = parse_model_spec(spec)
        seed_everything(seed)  # every stage starts from the student's seed
        net = build_model(parsed.name, num_classes=10, **parsed.options)
        hparams = method_hparams("takd", epochs, len(train))
        distiller = build_distiller("takd", net, previous, hparams)
        result = fit(distiller, train, test, seed=seed, epochs=epochs, **FIT)
        previous = distiller.student.eval().requires_grad_(False)
        stages.append((previous, result))
    return stages


smoke = PRESETS["smoke"]
tiny_train = preset_data(smoke, "train")
tiny_test = preset_data(smoke, "test")
path = [FAMILY["w8"], STUDENT]
mine = my_chain(teacher, path, tiny_train, tiny_test, SEED, epochs=1)
package = fit_chain(
    teacher, path, tiny_train, tiny_test, method="takd", seed=SEED,
    hparams=method_hparams("takd", 1, len(tiny_train)), epochs=1, **FIT,
)  # fmt: skip
print(f"{'stage':<14} {'my_chain':>9} {'fit_chain':>9}")
for name, (net, result), stage in zip(("assistant w8", STUDENT), mine,
                                      package, strict=True):  # fmt: skip
    for a, b in zip(net.state_dict().values(),
                    stage.network.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    print(f"{name:<14} {result.last_acc:8.2f}% {stage.result.last_acc:8.2f}%")
print("my_chain and fit_chain trained identical networks")
print("paths through", ["w16", "w8"], "->", chain_paths(["w16", "w8"]))
""")

# ----------------------------------------------------------------------------------------------
md(r"""
## Four paths on the protocol

The suite's TAKD part trains every path from `shapes_cnn_large` (width 32) to `cnn_wide_s2`
through two assistants of the width family, `w16` (295k parameters) and `w8` (74k), both
trained *as students*, by the book's 20-epoch protocol: $T \to S$ (direct KD, `kd_w32`),
$T \to w16 \to S$, $T \to w8 \to S$ and $T \to w16 \to w8 \to S$, with seeds 0, 1 and 2.
Every network of a path is a row of its own (`ta1`, `ta2`, `student`), with the accuracy of
the network that taught it. {numref}`fig-ch5-takd-tree` draws the paths as a tree, TAKD's
Figure 5 for our networks.
""")

code(r"""
def accuracy(method):
    values = [r["last_acc"] for r in rows if r["method"] == method]
    return np.mean(values), np.std(values)


teacher_acc = np.mean([r["teacher_acc"] for r in rows
                       if r["scheme"] == "kd_w32"])  # fmt: skip
NODES = {  # node: (x, y, label, method)
    "T": (0, 0.0, "teacher w32", None),
    "w16": (1, 1.0, "w16 <- T", "takd_w16/ta1"),
    "w8|w16": (2, 1.5, "w8 <- w16", "takd_w16_w8/ta2"),
    "w8": (2, -0.5, "w8 <- T", "takd_w8/ta1"),
    "S|w16,w8": (3, 1.5, "S <- w8 <- w16", "takd_w16_w8/student"),
    "S|w16": (3, 0.5, "S <- w16", "takd_w16/student"),
    "S|w8": (3, -0.5, "S <- w8", "takd_w8/student"),
    "S": (3, -1.5, "S <- T (direct)", "kd_w32/student"),
}
EDGES = [("T", "w16"), ("T", "w8"), ("T", "S"), ("w16", "w8|w16"),
         ("w16", "S|w16"), ("w8|w16", "S|w16,w8"), ("w8", "S|w8")]
for _, _, label, method in NODES.values():
    if method is None:
        print(f"{label:<16} {teacher_acc:6.2f}% (the zoo teacher)")
        continue
    mean, std = accuracy(method)
    print(f"{label:<16} {mean:6.2f} ± {std:.2f}%  ({method})")
""")

figure(
    r"""
fig, ax = subplots(size=(10, 4.6))
best = max((k for k in NODES if k.startswith("S")),
           key=lambda k: accuracy(NODES[k][3])[0])  # fmt: skip
for a, b in EDGES:
    (xa, ya, *_), (xb, yb, *_) = NODES[a], NODES[b]
    ax.annotate("", xy=(xb - 0.33, yb), xytext=(xa + 0.33, ya),
                arrowprops=dict(arrowstyle="-|>", color="tab:red", lw=1.5))
for key, (x0, y0, label, method) in NODES.items():
    if method is None:
        text = f"{label}\n{teacher_acc:.2f}%"
    else:
        mean, std = accuracy(method)
        text = f"{label}\n{mean:.2f} ± {std:.2f}%"
    face = "#cfe2f3" if key.startswith("S") else "0.9"
    edge = "tab:green" if key == best else "black"
    ax.add_patch(FancyBboxPatch((x0 - 0.32, y0 - 0.27), 0.64, 0.54,
                                boxstyle="round,pad=0.03", fc=face, ec=edge,
                                lw=2.5 if key == best else 1))  # fmt: skip
    ax.text(x0, y0, text, ha="center", va="center", fontsize=9)
ax.set_xticks(range(4), ["teacher (width 32)", "width 16", "width 8",
                         "student (cnn_wide_s2)"])  # fmt: skip
ax.set_xlim(-0.5, 3.5)
ax.set_ylim(-2.0, 2.0)
ax.set_yticks([])
for side in ("left", "right", "top"):
    ax.spines[side].set_visible(False)
plt.show()
""",
    "fig-ch5-takd-tree",
    """
Every path from the book's teacher (width 32) to cnn_wide_s2 through the assistants w16 and
w8, each network with its test accuracy (mean ± std over seeds). Arrows are KD steps; the
green box is the most accurate student.
""",
)

code(r"""
def gains_over(baseline, methods):
    chosen = [r for r in rows if r["pair"] == STUDENT
              and r["method"] in (baseline, *methods)]  # fmt: skip
    table = gains_with_intervals(chosen, N_TEST, baseline=baseline)
    return {g["method"].split("/")[0]: g for g in table}


students = [f"{label}/student" for label in PATHS]
over_alone = gains_over("scratch/student", students)
over_kd = gains_over("kd_w32/student", students[1:])
print(f"{'path':<22} {'acc %':>6} {'over alone':>11} "
      f"{'over direct KD [95%]':>25}")  # fmt: skip
for label, tas in PATHS.items():
    name = " -> ".join(("T", *tas, "S"))
    a = over_alone[label]
    line = f"{name:<22} {a['acc']:6.2f} {a['gain']:+11.2f}"
    if label in over_kd:
        g = over_kd[label]
        line += (f" {g['gain']:+7.2f} [{g['low']:+6.2f}, "
                 f"{g['high']:+6.2f}]")  # fmt: skip
    print(line)
alone_runs = [r["last_acc"] for r in rows if r["method"] == "scratch/student"]
glue("takd_seed_range", max(alone_runs) - min(alone_runs), display=False)
for label in PATHS:
    glue(f"takd_acc_{label}", over_alone[label]["acc"], display=False)
    if label in over_kd:
        glue(f"takd_vs_kd_{label}", over_kd[label]["gain"], display=False)
""")

md(r"""
Direct KD reaches {glue:text}`takd_acc_kd_w32:.2f` %. Against it, the path through w16
changes the student by {glue:text}`takd_vs_kd_takd_w16:.2f` points, the path through w8 by
{glue:text}`takd_vs_kd_takd_w8:.2f` and the full path by
{glue:text}`takd_vs_kd_takd_w16_w8:.2f`, each with its interval over the test images above.
Alone, this student's accuracy spans {glue:text}`takd_seed_range:.2f` points over the
seeds; pairing (same initial weights, same batches, same test images) is what makes
differences smaller than that visible at all. TAKD reports that assistants help; Cho and
Hariharan report that such chains do not. The first claim states what our paths did.
""")

code(
    r"""
# claim: no path through assistants beats direct KD, and each path through
# one assistant loses to it (gain over kd_w32, 95% interval)
single = ("takd_w16", "takd_w8")
if CHECK_CLAIMS:
    assert not any(g["low"] > 0 for g in over_kd.values()), over_kd
    for label in single:
        g = over_kd[label]
        assert g["high"] < 0, (
            f"{label}: {g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]"
        )
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: no path through assistants beats")
print("direct KD, and both paths through one assistant lose to it:")
for label, g in over_kd.items():
    print(f"  {label:<12} {g['gain']:+.2f} [{g['low']:+.2f}, "
          f"{g['high']:+.2f}]")
""",
    tags=["claim"],
)

md(r"""
Among the paths through assistants, the longest does best. Its w8 assistant was taught by
the w16 assistant rather than by the teacher, and reaches {glue:text}`takd_w8_via_w16:.2f` %
against {glue:text}`takd_w8_direct:.2f` % for the w8 assistant taught by the teacher; its
student then beats the students of both one-assistant paths. The second
claim compares the full path with each of them, paired.
""")

code(
    r"""
# claim: the path through both assistants beats each path through one
full = gains_over("takd_w16_w8/student", [f"{x}/student" for x in single])
if CHECK_CLAIMS:
    for label in single:
        assert full[label]["high"] < 0, (
            f"{label} minus the full path: {full[label]['gain']:+.2f} "
            f"[{full[label]['low']:+.2f}, {full[label]['high']:+.2f}]"
        )
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: T -> w16 -> w8 -> S beats both")
print("paths through one assistant (their student minus the full path's):")
for label in single:
    g = full[label]
    print(f"  {label:<9} {g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]")
w8_direct = accuracy("takd_w8/ta1")[0]
w8_via_w16 = accuracy("takd_w16_w8/ta2")[0]
print(f"the w8 assistant: {w8_direct:.2f}% from the teacher, "
      f"{w8_via_w16:.2f}% from w16")
glue("takd_w8_direct", w8_direct, display=False)
glue("takd_w8_via_w16", w8_via_w16, display=False)
""",
    tags=["claim"],
)

# ----------------------------------------------------------------------------------------------
md(r"""
## What a path costs

A path trains every network on it. The suite charges each row with its own training
(`train_flops`) and with everything it needed before it started (`prior_flops`): the
teacher's training (the zoo's 30-epoch recipe) and every earlier stage of its path. So the
student of $T \to w16 \to S$ pays for the teacher, for the w16 assistant (a network four
times the student's FLOPs, trained for 20 epochs) and for itself. {numref}`fig-ch5-takd-cost`
sets each path's student accuracy against that total.
""")

figure(
    r"""
def mean_row(method, key):
    return np.mean([r[key] for r in rows if r["method"] == method])


teacher_flops = mean_row("kd_w32/student", "prior_flops")
direct = mean_row("kd_w32/student", "total_flops")
cost = {label: mean_row(f"{label}/student", "total_flops") for label in PATHS}
fig, axes = subplots(1, 2, size=(11, 4), sharey=True)
for ax, charged in zip(axes, (True, False), strict=True):
    for label, tas in PATHS.items():
        c = (cost[label] - (0 if charged else teacher_flops)) / 1e12
        mean, std = accuracy(f"{label}/student")
        ax.errorbar(c, mean, yerr=std, fmt="o", capsize=3,
                    label=" -> ".join(("T", *tas, "S")))  # fmt: skip
    ax.set_xlabel("training FLOPs of the path (TFLOPs), "
                  + ("teacher included" if charged else "teacher free"))
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.grid(alpha=0.3)
axes[0].set_ylabel("student test accuracy (%, mean ± std)")
axes[1].legend(fontsize=8, loc="lower right")
plt.show()
extra = {label: 100 * (cost[label] / direct - 1) for label in PATHS}
free = {label: 100 * ((cost[label] - teacher_flops)
                      / (direct - teacher_flops) - 1) for label in PATHS}
for label in PATHS:
    print(f"{label:<12} {cost[label] / 1e12:6.2f} TFLOPs, "
          f"{extra[label]:+5.1f}% over direct KD, "
          f"{free[label]:+6.1f}% teacher free")
for label in list(PATHS)[1:]:
    glue(f"takd_extra_{label}", extra[label], display=False)
    glue(f"takd_free_{label}", free[label], display=False)
""",
    "fig-ch5-takd-cost",
    """
Each path's student accuracy against the training FLOPs of the whole path: the teacher's
own training included (left), or the teacher free (right), counting only the assistants and
the student. The assistants cost little beside the teacher's training, and several times
the student's run when the teacher exists already.
""",
)

code(
    r"""
# claim (certain by construction; design note 5.3c): a path costs more than
# direct KD
if CHECK_CLAIMS:
    for label in list(PATHS)[1:]:
        assert cost[label] > direct, f"{label} is not dearer than direct KD"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: every path through an assistant")
print("costs more training FLOPs than direct KD:")
for label in list(PATHS)[1:]:
    print(f"  {label:<12} {extra[label]:+6.1f}% (teacher charged), "
          f"{free[label]:+7.1f}% (teacher free)")
""",
    tags=["claim"],
)

md(r"""
With the teacher's training charged, the w16 path costs {glue:text}`takd_extra_takd_w16:.1f`%
more than direct KD and the full path {glue:text}`takd_extra_takd_w16_w8:.1f`%; with the
teacher free (it existed anyway), the same paths cost {glue:text}`takd_free_takd_w16:.0f`%
and {glue:text}`takd_free_takd_w16_w8:.0f`% more. A gain of a fraction of a point is cheap in
the first accounting and expensive in the second.

## Distilled assistant or trained alone?

The paper asks whether an assistant needs to be distilled at all: would the same network,
trained alone, teach as well? Our family answers it without extra runs, because the zoo's
`shapes_cnn_w16` and `shapes_cnn_w8` are the assistants' architectures trained alone. They
were trained by the *teacher's* recipe (30 epochs, batch 128, crops and flips) rather than
the protocol's (20 epochs, batch 64, no augmentation), so the comparison is between two
ways of making an assistant, not between distilled and not distilled alone.
""")

code(r"""
alone_vs = {}
for w in ("w16", "w8"):
    g = gains_over(f"kd_{w}/student", [f"takd_{w}/student"])[f"takd_{w}"]
    alone_vs[w] = g
    ta = accuracy(f"takd_{w}/ta1")[0]
    zoo = np.mean([r["teacher_acc"] for r in rows if r["scheme"] == f"kd_{w}"])
    print(f"{w}: the assistant distilled {ta:.2f}%, trained alone {zoo:.2f}%;")
    print(f"    its student: distilled TA minus zoo TA {g['gain']:+.2f} "
          f"[{g['low']:+.2f}, {g['high']:+.2f}]")
    glue(f"takd_ta_{w}", ta, display=False)
    glue(f"takd_zoo_{w}", zoo, display=False)
    glue(f"takd_ta_vs_zoo_{w}", g["gain"], display=False)
""")

code(
    r"""
# claim: the zoo's w16, trained alone by the teacher's recipe, teaches the
# student better than the w16 assistant distilled by the protocol
g = alone_vs["w16"]
if CHECK_CLAIMS:
    assert g["high"] < 0, (
        f"the distilled w16 minus the zoo's w16: {g['gain']:+.2f} "
        f"[{g['low']:+.2f}, {g['high']:+.2f}]"
    )
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: the zoo's w16 (shapes_cnn_w16) is a")
print("better teacher than the w16 assistant distilled from the teacher:")
print(f"  distilled minus zoo {g['gain']:+.2f} [{g['low']:+.2f}, "
      f"{g['high']:+.2f}] points")
""",
    tags=["claim"],
)

md(r"""
The distilled w16 assistant is {glue:text}`takd_ta_w16:.2f` % accurate, the zoo's w16
{glue:text}`takd_zoo_w16:.2f` %; the student of the first minus the student of the second
is {glue:text}`takd_ta_vs_zoo_w16:.2f` points. Here the better assistant is simply the more
accurate one, and the zoo's is more accurate because its recipe is longer and augments its
images, not because it was trained alone. Within the width family the same w16 taught
*better* than the w32 teacher ({doc}`capacity-gap`): an assistant helps when it is a good
teacher in its own right, and the protocol's 20 epochs did not make one.

## How large should the assistant be?

TAKD's authors suggest a rule: pick the assistant whose accuracy, *trained alone*, is
closest to the mean of the teacher's and the student's. On our protocol the teacher is
{glue:text}`takd_teacher_acc:.2f` % accurate and the student alone
{glue:text}`takd_alone_acc:.2f` %, so the rule asks for about
{glue:text}`takd_target:.2f` %.
""")

code(r"""
alone_acc = accuracy("scratch/student")[0]
target = (teacher_acc + alone_acc) / 2
zoo_acc = {w: np.mean([r["teacher_acc"] for r in rows
                       if r["scheme"] == f"kd_{w}"]) for w in ("w16", "w8")}
rule = min(zoo_acc, key=lambda w: abs(zoo_acc[w] - target))
ours = max(("w16", "w8"), key=lambda w: accuracy(f"takd_{w}/student")[0])
print(f"teacher {teacher_acc:.2f}%, student alone {alone_acc:.2f}%: "
      f"target {target:.2f}%")
for w, acc in zoo_acc.items():
    print(f"  {w} trained alone {acc:.2f}% (distance {abs(acc - target):.2f})")
print(f"the rule picks {rule}; the better single assistant here was {ours}")
glue("takd_teacher_acc", teacher_acc, display=False)
glue("takd_alone_acc", alone_acc, display=False)
glue("takd_target", target, display=False)
glue("takd_rule_width", int(rule[1:]), display=False)
glue("takd_ours_width", int(ours[1:]), display=False)
""")

md(r"""
The rule picks w{glue:text}`takd_rule_width`; on our protocol the single assistant whose
student ended more accurate was w{glue:text}`takd_ours_width`. With two candidate sizes and three seeds
this is one observation, not a test of the rule.

## A chain, live

To see what the rows are made of, we run the path $T \to w8 \to S$ for seed 0 at this
page's scale with `my_chain`: the w8 assistant (20 epochs of KD from the teacher), then the
student (20 epochs of KD from the assistant), about four minutes on one core at book
scale. {numref}`fig-ch5-takd-live` shows both networks' test accuracy after each epoch,
beside the student of direct KD from the suite.
""")

code(r"""
live = my_chain(teacher, [FAMILY["w8"], STUDENT], train, test, SEED,
                epochs=preset.epochs)  # fmt: skip
for (_, result), network in zip(live, ("ta1", "student"), strict=True):
    row = next(r for r in rows if r["method"] == f"takd_w8/{network}"
               and r["seed"] == SEED)  # fmt: skip
    print(f"{network:<8} live {result.last_acc:6.2f}%  suite "
          f"{row['last_acc']:6.2f}%  {result.seconds:5.0f} s")
""")

figure(
    r"""
fig, ax = subplots(size=(8, 4.2))
for (_, result), name, color in zip(
    live, ("assistant w8 (live)", "student via w8 (live)"),
    ("tab:gray", "tab:blue"), strict=True,
):
    acc = [h["test_acc"] for h in result.history]
    ax.plot(range(1, len(acc) + 1), acc, "o-", ms=3, color=color, label=name)
direct_curve = next(r["curve"] for r in rows if r["method"] ==
                    "kd_w32/student" and r["seed"] == SEED)  # fmt: skip
ax.plot(range(1, len(direct_curve) + 1), direct_curve, "s--", ms=3,
        color="tab:red", label="student, direct KD (suite)")  # fmt: skip
ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
ax.set_xlabel("epoch")
ax.set_ylabel(f"test accuracy (%, seed {SEED})")
ax.legend(loc="lower right")
ax.grid(alpha=0.3)
plt.show()
""",
    "fig-ch5-takd-live",
    """
A live chain, teacher to assistant w8 to cnn_wide_s2 (seed 0): the test accuracy of the
assistant and of the student after each epoch, beside the student of direct KD from the
suite's row of the same seed.
""",
)

md(r"""
## Published numbers

TAKD's tables compare plain CNNs and ResNets on CIFAR-10, CIFAR-100 and ImageNet, after
150 epochs, and report for each the best test accuracy of a hyperparameter search (120
trials, the seed among the searched values; `kdtutor.methods.takd` documents it). They are
not in `kdtutor.bench.architecture.PUBLISHED_ARCHITECTURE`: their numbers have not been
checked at the source yet. The cell below prints whatever the package records for this
part, so the page shows them once they are added; beside ours, remember that a 20-epoch run
on 20,000 `shapes` images with KD's fixed settings is not a best-of-120 search.
""")

code(r"""
published = PUBLISHED_ARCHITECTURE.get("takd", ())
if not published:
    print("PUBLISHED_ARCHITECTURE has no 'takd' entries yet (the paper's")
    print("tables are not verified); parts recorded:",
          ", ".join(PUBLISHED_ARCHITECTURE))  # fmt: skip
for e in published:
    print(f"{e['dataset']:<10} {e['network']:<14} {e['setting'][:28]:<28} "
          f"{e['top1']:6.2f} {e['gain'] if e['gain'] is not None else '':>6}")
best = max(over_kd, key=lambda label: over_kd[label]["gain"])
g = over_kd[best]
print(f"ours (shapes, 20 epochs): the best path through assistants, {best},")
print(f"over direct KD {g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]")
""")

# ----------------------------------------------------------------------------------------------
md(r"""
## Exercises
""")

md(r"""
````{exercise} The rule for a smaller student
:label: ex-ch5-ta-rule

Apply TAKD's size rule to the second student, `cnn_tiny_s2`: read its accuracy alone
(`scratch_tiny`) from the suite's CSV with `kdtutor.bench.schemes.load_schemes`, compute the
target accuracy and the assistant the rule picks among the zoo's `shapes_cnn_w8` and
`shapes_cnn_w16`. Does the rule pick a smaller assistant for a smaller student? What
would a `cnn_tiny_s2` path through that assistant cost, compared with `cnn_wide_s2`'s?
````

````{solution} ex-ch5-ta-rule
:class: dropdown

```python
from kdtutor.bench.architecture import default_architecture_path
from kdtutor.bench.schemes import load_schemes

every, _ = load_schemes(default_architecture_path("book"))
tiny = np.mean([r["last_acc"] for r in every
                if r["method"] == "scratch_tiny/student"])
target = (teacher_acc + tiny) / 2
pick = min(zoo_acc, key=lambda w: abs(zoo_acc[w] - target))
print(f"cnn_tiny_s2 alone {tiny:.2f}%: target {target:.2f}%, pick {pick}")
```

The student alone is less accurate, so the target is lower and the rule can only move
towards the smaller assistant. The assistant's training dominates a path's cost when the
teacher is free (w8 costs about 1.35 runs of `cnn_wide_s2`, w16 about 2.2), so the path of
the smaller student costs almost the same as the larger one's: the student's own run is
the small part.
````
""")

md(r"""
````{exercise} What the path search costs
:label: ex-ch5-path-search

Trying all four paths is itself a search. Using the rows' `train_flops` and `prior_flops`,
compute what the four paths cost together when every distinct network is trained once (the
teacher, the assistants w16 from T, w8 from T and w8 from w16, four students), and compare
it with direct KD. Which stages does `fit_chain`'s store train only once?
````

````{solution} ex-ch5-path-search
:class: dropdown

```python
def train_flops(method):
    return mean_row(method, "train_flops")

stages = ["takd_w16/ta1", "takd_w8/ta1", "takd_w16_w8/ta2",
          *[f"{label}/student" for label in PATHS]]
search = teacher_flops + sum(train_flops(m) for m in stages)
print(f"all four paths {search / 1e12:.1f} TFLOPs, direct KD "
      f"{direct / 1e12:.1f}: {100 * (search / direct - 1):+.0f}%")
```

`takd_w16/ta1` and `takd_w16_w8/ta1` are the same network ($T \to w16$ with the same seed
and settings), so the store trains it once and the second scheme loads it (its row is
charged the FLOPs recorded beside the stored weights). Without the teacher's training the
search costs several times direct KD; with it, a few tens of percent more.
````
""")

md(r"""
````{exercise} The code's weight
:label: ex-ch5-takd-weight

The authors' code divides the KD term by the number of classes $K$. Show that a TAKD step
with `kl_reduction="elementwise"` and weight $\lambda$ on the KD term has the same loss as
the paper's form with weight $\lambda / K$, and check it with the package on `x, y` and the
assistant above for $\lambda = 0.9$. What does that mean for the published runs, whose
search over $\lambda$ stops at 1?
````

````{solution} ex-ch5-takd-weight
:class: dropdown

The elementwise mean is the batch mean of the KL summed over classes, divided by $K$, so
$\lambda \cdot \mathrm{KL}/K = (\lambda / K) \cdot \mathrm{KL}$:

```python
code_form = build_distiller("takd", assistant, teacher,
                            {"kl_reduction": "elementwise"})
paper_form = build_distiller("takd", assistant, teacher,
                             {"kd_weight": 0.9 / 10})
_, a = code_form(x, y)
_, b = paper_form(x, y)
torch.testing.assert_close(a["kd"], b["kd"])
torch.testing.assert_close(a["ce"], b["ce"])
```

With ten classes the code's KD term weighs a tenth of the paper's formula; on CIFAR-100 a
hundredth. A search of $\lambda$ up to 1 in the code's form never reaches the weight of
KD's usual 0.9 in the paper's form, so the published students were trained with a much
weaker pull towards their teachers than the formula suggests.
````
""")

md(r"""
````{exercise} Settling the disagreement
:label: ex-ch5-takd-cho

TAKD reports that assistants help; Cho and Hariharan that a sequence of KD steps does not
fix the capacity gap. Design an experiment with the package's pieces (`fit_chain`, the
width family, `gains_with_intervals`) that could tell the two apart on `shapes`: which
student, which teacher, which paths, how many seeds, and what result would support each
side? Estimate its cost in runs of `cnn_wide_s2`.
````

````{solution} ex-ch5-takd-cho
:class: dropdown

The disagreement matters only where direct KD suffers from the gap, so start where it is
largest: the smallest student (`cnn_tiny_s2`) and the widest teacher (w48, or w32 if w48
gives no gap), and check first that the capacity-gap page shows a gap there (a smaller
teacher's student significantly better). Then compare, paired by seed, direct KD from the
wide teacher, the paths through w16 and w8, and KD from the best small teacher alone. TAKD
is supported if a path recovers what the small teacher gives (the path's student at least
as good as the small teacher's); Cho and Hariharan if the paths stay with direct KD while
the small teacher is better. With 5 seeds: 5 x (3 students of paths + 3 assistants) runs,
about 5 x (3 x 0.7 + 2.2 + 1.35 + 1.35) = 35 runs of `cnn_wide_s2`, plus the capacity-gap
rows that exist already.
````
""")

md(r"""
## Summary

- A TAKD step is KD with another teacher; the authors' code weights the KD term $K$ times
  less than the paper's formula.
- A chain trains its networks in turn; starting every stage from the student's seed pairs
  each path with direct KD image by image. `my_chain` and `fit_chain` train identical
  networks.
- On the book's protocol no path through assistants beat direct KD
  ({glue:text}`takd_acc_kd_w32:.2f` %): the path through w16 changed the student by
  {glue:text}`takd_vs_kd_takd_w16:.2f` points, the path through w8 by
  {glue:text}`takd_vs_kd_takd_w8:.2f` and the full path by
  {glue:text}`takd_vs_kd_takd_w16_w8:.2f`. The full path beat both one-assistant paths.
- The assistants distilled by the protocol were less accurate than the zoo's networks of
  the same widths, and the zoo's w16 taught better than the distilled one: an assistant
  must first be a good teacher.
- Paths cost more: {glue:text}`takd_extra_takd_w16_w8:.1f`% more FLOPs than direct KD with
  the teacher charged, {glue:text}`takd_free_takd_w16_w8:.0f`% more with the teacher free.
- TAKD's size rule picked w{glue:text}`takd_rule_width`, our better single assistant was
  w{glue:text}`takd_ours_width`.

## References

- {cite}`mirzadeh2020takd`: teacher assistants, the paths and the size rule.
- {cite}`cho2019efficacy`: a sequence of KD steps does not close the gap.
- {cite}`hinton2015distilling`: the KD loss of every step.
- {cite}`kaleem2024review`, section 5 (teacher-student architecture).
""")

# ----------------------------------------------------------------------------------------------
nb = new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
nbformat.write(nb, OUT)
print(f"wrote {OUT} ({len(cells)} cells)")
