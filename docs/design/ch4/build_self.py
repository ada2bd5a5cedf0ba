"""Build the draft notebook docs/design/ch4/self.ipynb (chapter 4, self-distillation).

Run from the repository root: ``.venv/bin/python docs/design/ch4/build_self.py``. The notebook
is written without outputs; execute it (at smoke scale while the book-scale CSV does not
exist) with nbconvert or papermill.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
OUT = HERE / "self.ipynb"


def md(source: str) -> nbformat.NotebookNode:
    return new_markdown_cell(source.strip("\n"))


def code(source: str, *, tags: list[str] | None = None, figure: tuple[str, str] | None = None):
    metadata: dict = {}
    if tags:
        metadata["tags"] = tags
    if figure:
        name, caption = figure
        metadata["mystnb"] = {"figure": {"caption": caption, "name": name}}
    return new_code_cell(source.strip("\n"), metadata=metadata)


CELLS = [
    md(
        """
**DRAFT: claims to be confirmed against schemes_book.csv.** Every `claim` cell below is a
candidate from the chapter plan (`docs/design/schemes.md`, section 4.2); the prose around
the numbers is written without knowing them and must be re-read once the suite has run.
"""
    ),
    md(
        r"""
# Self-distillation: a network as its own teacher

Offline distillation needs a teacher that is better than the student, trained first and at a
cost. Online distillation ({doc}`online`) trains the teachers alongside. *Self*-distillation
goes one step further and drops the second network altogether: the student is taught by a
part of itself, by an earlier copy of itself, or by its own predictions on other images. This
page follows four recipes, each a different answer to "where does the soft target come from
when there is no teacher?":

- **BYOT**, Be Your Own Teacher {cite}`zhang2019byot`: small classifiers (*exits*) after
  the early stages of the network, taught by its deepest exit. One training run gives a
  network that can stop early and pay fewer FLOPs per image.
- **Born-Again Networks** (BAN) {cite}`furlanello2018born`: train the network, then train a
  fresh copy of the same architecture by KD from it, and again; ensemble the generations.
- **CS-KD**, class-wise self-knowledge distillation {cite}`yun2020cskd`: the network's
  softened prediction on *another image of the same class* is the soft target.
- **Tf-KD self** {cite}`yuan2020revisiting`: a trained copy of the student teaches it once,
  which turns out to be Born-Again's first generation with other weights.

All four train the book protocol's first student, `cnn_wide_s2` (24k parameters), on the
`shapes` images, in the chapter's schemes suite (`kdtutor bench --suite schemes`), which
also records what each scheme costs: the FLOPs of its training, of what it needed before
(earlier generations, a trained copy), and of one prediction at test time.

**What you will learn**

- how BYOT attaches its exits, and its loss written out term by term on one batch and checked
  against `build_distiller("byot", ...)`;
- to read an *anytime* classifier: accuracy at each exit against the FLOPs it costs;
- what each Born-Again generation and each ensemble of generations buys, and what it costs to
  train and to run;
- the CS-KD loss from scratch, with the partner of each image drawn from its class;
- why Tf-KD's self mode and Born-Again's first generation are one scheme, and which of these
  gains are larger than the noise of the measurement.
"""
    ),
    code(
        """
import os

# "smoke" (tests), "book" (default), "full"
SCALE = os.environ.get("KDTUTOR_SCALE", "book")
SEED = 0
# True: run the missing schemes of this page (book: about 1.5 hours on 1 core)
RERUN = False
""",
        tags=["parameters"],
    ),
    code(
        """
import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyBboxPatch
from myst_nb import glue

from kdtutor.bench.cost import network_flops
from kdtutor.bench.knowledge import PRESETS, preset_data
from kdtutor.bench.report import gains_with_intervals
from kdtutor.bench.schemes import (
    page_rows,
)
from kdtutor.losses.schemes import ensemble_log_probs
from kdtutor.methods import build_distiller
from kdtutor.methods.byot import byot_kd_loss, exit_networks
from kdtutor.methods.cskd import class_partners
from kdtutor.models import build_model
from kdtutor.plots import subplots
from kdtutor.scales import by_scale
from kdtutor.seeding import seed_everything
from kdtutor.train import fit, predict_logits

torch.set_num_threads(1)  # as the suite's runs (the preset's threads)
CHECK_CLAIMS = SCALE != "smoke"
PRESET = "smoke" if SCALE == "smoke" else "book"
preset = PRESETS[PRESET]
STUDENT = preset.pairs[0].student  # cnn_wide_s2
SELF_SCHEMES = ["scratch", "byot", "ban", "tfkd_self", "cskd"]
BASELINE = "scratch/student"
seed_everything(SEED)

# the schemes suite's rows: a tiny suite at smoke scale (one epoch on 256
# images), the committed CSV at book scale
rows, provenance = page_rows(SCALE, SELF_SCHEMES, rerun=RERUN)
rows = [r for r in rows if r["scheme"] in SELF_SCHEMES]
train = preset_data(preset, "train")
test = preset_data(preset, "test")
N_TEST = len(test)
SHAPE = tuple(train.images.shape[1:])
seeds = sorted({r["seed"] for r in rows})
print(f"{len(rows)} rows of {', '.join(SELF_SCHEMES)}; seeds {seeds}")
print(f"{len(train):,} training and {N_TEST:,} test images of {SHAPE}")
for key in ("command", "commit", "date", "machine"):
    print(f"  {key:8} {provenance.get(key, '?')[:66]}")
"""
    ),
    md(
        """
A few helpers read the table: a network's accuracy over the seeds, its costs, and the
comparison of two networks image by image. `versus(a, b)` is
`kdtutor.bench.report.gains_with_intervals` restricted to two rows of the table: the gain of
`a` over `b` (mean over seeds), its 95% interval from a paired bootstrap over the test images,
the spread of the per-seed gains, and the number of seeds where McNemar's test finds `a`
significantly better or worse than `b`'s run of the same seed (the same initial weights and
batch order; chapter {doc}`../07-comparison/comparison` explains each).
"""
    ),
    code(
        """
def runs(method):
    return sorted((r for r in rows if r["method"] == method),
                  key=lambda r: r["seed"])  # fmt: skip


def accuracy(method):  # mean and sample std over the seeds
    values = [r["last_acc"] for r in runs(method)]
    std = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return float(np.mean(values)), float(std)


def cost(method, key):  # FLOPs do not depend on the seed
    return float(runs(method)[0][key])


def versus(a, b):
    pair = [r for r in rows if r["method"] in (a, b)]
    return gains_with_intervals(pair, N_TEST, baseline=b)[0]


def interval(g):
    return f"{g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]"


scratch_acc, scratch_std = accuracy(BASELINE)
glue("scratch_acc", scratch_acc, display=False)
alone_mflops = cost(BASELINE, "infer_flops") / 1e6
print(f"{STUDENT} alone: {scratch_acc:.2f} ± {scratch_std:.2f}% "
      f"({alone_mflops:.2f} MFLOPs per image)")  # fmt: skip
"""
    ),
    md(
        r"""
## Be Your Own Teacher: exits taught by the deepest one

A convolutional network is a chain of stages, and each stage's output is already a
description of the image that a classifier could read. BYOT {cite}`zhang2019byot` attaches
such a classifier, an **exit**, after every stage but the last. The network's own classifier
is the deepest exit $C$; a shallow exit $i$ is a small *bottleneck* (a 1x1 convolution to a
quarter of the deepest features' width, a strided convolution that brings the map to the last
stage's resolution, a 1x1 convolution to the deepest width, each followed by batch norm and
ReLU), global average pooling, which gives its features $F_i$, and a linear layer, which gives
its logits $z_i$. During training every exit learns, and the deepest one teaches the others
three things: the labels, its softened prediction, and its pooled features $F_C$.

The paper gives the loss but not its weights; the re-implementation the book follows
(`llf000000-pytorch-be-your-own-teacher`, whose settings are the only published ones) uses
$\alpha = 0.1$, $T = 3$ and $\beta = 10^{-6}$ and minimises, for a batch of $B$ images,

$$
\mathcal{L} = (1-\alpha)\Big(\mathrm{CE}(z_C, y) + \sum_i \mathrm{CE}(z_i, y)\Big)
+ \alpha \sum_i \frac{T^2}{B}\sum_b \Big(-\sum_k p^T_{C,k} \log p^T_{i,k}\Big)
+ \beta \sum_i \sum_{b,j} (F_i - F_C)_{bj}^2\,
  \mathbb{1}\big[(F_i)_{bj} > 0 \lor (F_C)_{bj} > 0\big],
$$

with $p^T = \mathrm{softmax}(z / T)$ and $z_C$, $F_C$ treated as constants in the second and
third terms: the deepest exit learns from the labels only. The paper's own equation differs
in three places (the deepest cross entropy weighted 1, a KL divergence instead of the soft
cross entropy, a plain squared distance averaged over the batch); `kdtutor.methods.byot`
offers it as `mode="paper"`, and {doc}`../appendix/deviations` lists the differences.

For `cnn_wide_s2`, with three stages, that makes two shallow exits
({numref}`fig-ch4-byot-exits`). What each one reads and what it costs per image:
"""
    ),
    code(
        """
def stage_outputs(student, paths, x):
    # the student's logits and what each named module returned, by hooks
    seen = {}
    hooks = [
        student.get_submodule(p).register_forward_hook(
            lambda module, args, out, p=p: seen.__setitem__(p, out)
        )
        for p in paths
    ]
    try:
        logits = student(x)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, seen


seed_everything(SEED)
byot = build_distiller("byot", build_model(STUDENT, num_classes=10),
                       input_shape=SHAPE)  # fmt: skip
STAGES = list(byot.student.stage_names)
with torch.no_grad():
    byot.eval()
    _, maps = stage_outputs(byot.student, STAGES, torch.zeros(1, *SHAPE))
exit_mflops = {name: network_flops(net, SHAPE) / 1e6
               for name, net in exit_networks(byot).items()}  # fmt: skip
print(f"{'network':<9} {'reads':<9} {'map (C, H, W)':<14} {'head params':>11} "
      f"{'MFLOPs':>7}")  # fmt: skip
def chw(path):
    return str(tuple(maps[path].shape[1:]))


exits = list(zip(byot.exit_paths, byot.heads, strict=True))
for i, (path, head) in enumerate(exits, 1):
    params = sum(p.numel() for p in head.parameters())
    print(f"{'exit' + str(i):<9} {path:<9} {chw(path):<14} "
          f"{params:>11,} {exit_mflops[f'exit{i}']:>7.2f}")  # fmt: skip
print(f"{'deepest':<9} {STAGES[-1]:<9} {chw(STAGES[-1]):<14} "
      f"{'(its fc)':>11} {exit_mflops['student']:>7.2f}")  # fmt: skip
print(f"{'ensemble':<9} {'all':<9} {'':<14} {'':>11} "
      f"{exit_mflops['ensemble']:>7.2f}")  # fmt: skip
# the suite measured the same networks another way (a hook stops the forward)
for name in ("exit1", "exit2", "student", "ensemble"):
    assert cost(f"byot/{name}", "infer_flops") / 1e6 == exit_mflops[name], name
print("the schemes CSV's infer_flops agree with exit_networks")
for name in ("exit1", "exit2", "student"):
    glue(f"{name}_mflops", exit_mflops[name], display=False)
"""
    ),
    code(
        """
W, H = 1.7, 0.9  # the boxes' width and height
TOP, MID, LOW = 3.0, 1.35, -0.4  # the rows: stages, bottlenecks, classifiers


def box(ax, x, y, text, color, h=H):
    ax.add_patch(FancyBboxPatch((x - W / 2, y - h / 2), W, h, fc=color,
                                ec="black", boxstyle="round,pad=0.06",
                                zorder=2))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=9, zorder=3)


def arrow(ax, start, end, color="black", **kwargs):
    ax.annotate("", xy=end, xytext=start, zorder=1, arrowprops=dict(
        arrowstyle="-|>", color=color, lw=1.3, shrinkA=4, shrinkB=4,
        **kwargs))  # fmt: skip


def shape_text(path):
    c, h, w = maps[path].shape[1:]
    return f"{c}x{h}x{w}"


fig, ax = subplots(size=(11, 4.8))
xs = [0, 2.4, 4.8, 7.2, 9.6]
box(ax, xs[0], TOP, "input\\n" + "x".join(map(str, SHAPE)), "white")
for j, path in enumerate(STAGES):
    box(ax, xs[j + 1], TOP, f"stage {j}\\n{shape_text(path)}", "tab:blue")
box(ax, xs[4], TOP, "pool: $F_C$", "tab:blue")
for a, b in itertools.pairwise(xs):
    arrow(ax, (a + W / 2, TOP), (b - W / 2, TOP))
box(ax, xs[4], LOW, f"fc: $z_C$ (deepest)\\n"
    f"{exit_mflops['student']:.2f} MFLOPs", "tab:blue")  # fmt: skip
arrow(ax, (xs[4], TOP - H / 2), (xs[4], LOW + H / 2))
exits = list(zip(byot.exit_paths, byot.heads, strict=True))
for i, (path, head) in enumerate(exits, 1):
    k = head.bottleneck[3].kernel_size[0]
    x = xs[STAGES.index(path) + 1]
    box(ax, x, MID, f"bottleneck\\n1x1, {k}x{k}/{k}, 1x1\\npool: $F_{i}$",
        "tab:orange", h=1.1)  # fmt: skip
    box(ax, x, LOW, f"fc: $z_{i}$\\n{exit_mflops[f'exit{i}']:.2f} MFLOPs",
        "tab:orange")  # fmt: skip
    arrow(ax, (x, TOP - H / 2), (x, MID + 0.55))
    arrow(ax, (x, MID - 0.55), (x, LOW + H / 2))
    # the deepest exit teaches: soft targets (red) and a hint (green)
    arrow(ax, (xs[4], LOW - H / 2), (x, LOW - H / 2), color="tab:red",
          ls="--", connectionstyle=f"arc3,rad={-0.1 - 0.08 * i}")  # fmt: skip
    arrow(ax, (xs[4] - W / 2, TOP - 0.3), (x + W / 2, MID + 0.3),
          color="tab:green", ls=":",
          connectionstyle="arc3,rad=0.1")  # fmt: skip
ax.plot([], [], color="tab:red", ls="--", label="soft targets $p_C^T$ (KD)")
ax.plot([], [], color="tab:green", ls=":", label="hint: features $F_C$")
ax.legend(loc="upper left", fontsize=9)
ax.set_xlim(-1.0, 10.6)
ax.set_ylim(-2.2, 4.3)
ax.axis("off")
plt.show()
""",
        figure=(
            "fig-ch4-byot-exits",
            "BYOT on cnn_wide_s2: an exit (orange) after each stage but the last reads that "
            "stage's feature map, brings it to the last stage's width and resolution with a "
            "bottleneck, pools it into features F_i and classifies. The deepest exit (the "
            "network's own classifier) teaches every shallow exit its softened prediction "
            "(red) and its pooled features (green, a hint). The FLOPs are those of running the "
            "network up to each exit, for one image.",
        ),
    ),
    md(
        r"""
### The loss on one batch

We write the loss from the equation above, reading the stages' outputs with forward hooks
(`stage_outputs`) and applying the exits' heads ourselves, and compare every term with what
the package's distiller returns for the same batch. Only the *networks* come from the
package: the bottleneck and pooling of `head.embed`, the linear layer `head.fc`.
"""
    ),
    code(
        """
def my_byot_losses(student, heads, paths, x, y, alpha=0.1, T=3.0, beta=1e-6,
                   embedding="flatten"):  # fmt: skip
    z_deep, seen = stage_outputs(student, [*paths, embedding], x)
    target = F.softmax(z_deep.detach() / T, dim=1)  # p_C^T, a constant
    f_deep = seen[embedding].detach()  # F_C, a constant
    losses = {"ce": (1 - alpha) * F.cross_entropy(z_deep, y)}
    for i, (path, head) in enumerate(zip(paths, heads, strict=True), 1):
        f = head.embed(seen[path])  # bottleneck, pool: F_i
        z = head.fc(f)
        soft_ce = -(target * F.log_softmax(z / T, dim=1)).sum(dim=1).mean()
        mask = (f > 0) | (f_deep > 0)
        losses[f"ce{i}"] = (1 - alpha) * F.cross_entropy(z, y)
        losses[f"kd{i}"] = alpha * T**2 * soft_ce
        losses[f"feat{i}"] = beta * ((f - f_deep) ** 2 * mask).sum()
    return losses


x, y = train.batch(torch.arange(64))
byot.train()
_, package = byot(x, y)
mine = my_byot_losses(byot.student, byot.heads, byot.exit_paths, x, y)
torch.testing.assert_close(mine, package)
print("my_byot_losses agrees with build_distiller('byot', ...) term by term:")
for name, value in package.items():
    print(f"  {name:<6} {value.item():.6f}")
"""
    ),
    md(
        r"""
The hint's weight looks absurdly small, but its term is a *sum* over the batch and the 64
features rather than a mean, so $\beta = 10^{-6}$ is less small than it looks; on this batch,
for an untrained network, it is still by far the smallest term. The soft cross entropy of
the code and the KL divergence of the paper differ by the entropy of the deepest exit's
softened prediction, $T^2 H(p_C^T)$, a constant for the shallow exit: the two give the same
gradient, and the code's term is simply larger by that amount.
"""
    ),
    code(
        """
z_deep, seen = stage_outputs(byot.student, byot.exit_paths, x)
z1 = byot.heads[0](seen[byot.exit_paths[0]])
p = F.softmax(z_deep.detach() / 3.0, dim=1)
entropy = -(p * p.log()).sum(dim=1).mean()
code_kd = byot_kd_loss(z1, z_deep, 3.0, "code")
gap = code_kd - byot_kd_loss(z1, z_deep, 3.0, "paper")
torch.testing.assert_close(gap, 3.0**2 * entropy)
print(f"code minus paper KD term for exit 1: {gap.item():.4f} "
      f"= T^2 H(p_C) = {3.0**2 * entropy.item():.4f}")  # fmt: skip
"""
    ),
    md(
        r"""
### Anytime prediction

A network with exits can stop early: an easy image, or a tight budget, takes the first exit
and pays only the FLOPs up to it. Such a network is an *anytime* classifier, and the way to
read it is accuracy against the FLOPs each exit costs per image
({numref}`fig-ch4-anytime`). The suite scored every exit of the BYOT runs on the 10,000 test
images (`byot/exit1`, `byot/exit2`, the deepest exit `byot/student`, and `byot/ensemble`,
the average of all exits' probabilities, which costs the whole network plus every head). The
student trained alone is the reference: one network, one exit,
{glue:text}`student_mflops:.2f` MFLOPs per image. Each exit is compared with it on the same
test images.
"""
    ),
    code(
        """
BYOT_NETS = ["exit1", "exit2", "student", "ensemble"]
print(f"{'network':<15} {'MFLOPs':>6} {'acc %':>14} "
      f"{'vs alone [95%]':>22} {'+/-':>4}")  # fmt: skip
byot_rows = {}
for name in BYOT_NETS:
    method = f"byot/{name}"
    acc, std = accuracy(method)
    g = versus(method, BASELINE)
    byot_rows[name] = (acc, std, g)
    print(f"{method:<15} {cost(method, 'infer_flops') / 1e6:>6.2f} "
          f"{acc:>6.2f} ± {std:4.2f} {interval(g):>22} "
          f"{g['better']}/{g['worse']}")  # fmt: skip
    glue(f"byot_{name}_acc", acc, display=False)
print(f"{BASELINE:<15} {cost(BASELINE, 'infer_flops') / 1e6:>6.2f} "
      f"{scratch_acc:>6.2f} ± {scratch_std:4.2f}")  # fmt: skip
"""
    ),
    code(
        """
fig, ax = subplots(size=(8, 4.6))
mflops = [cost(f"byot/{n}", "infer_flops") / 1e6 for n in BYOT_NETS]
ax.errorbar(mflops, [byot_rows[n][0] for n in BYOT_NETS],
            yerr=[byot_rows[n][1] for n in BYOT_NETS], fmt="o-",
            color="tab:orange", capsize=3, label="BYOT exits")  # fmt: skip
for x_, n in zip(mflops, BYOT_NETS, strict=True):
    label = "deepest" if n == "student" else n
    ax.annotate(label, (x_, byot_rows[n][0]), textcoords="offset points",
                xytext=(6, -12))  # fmt: skip
ban_nets = [BASELINE] + [f"ban/ens0-{g}" for g in (1, 2, 3)]
ax.errorbar([cost(m, "infer_flops") / 1e6 for m in ban_nets],
            [accuracy(m)[0] for m in ban_nets],
            yerr=[accuracy(m)[1] for m in ban_nets], fmt="s--", color="grey",
            capsize=3, label="Born-Again ensembles of gens 0..g")  # fmt: skip
ax.errorbar([cost(BASELINE, "infer_flops") / 1e6], [scratch_acc],
            yerr=[scratch_std], fmt="*", ms=14, color="tab:blue", capsize=3,
            label=f"{STUDENT} alone")  # fmt: skip
ax.set_xlabel("inference cost (MFLOPs per image)")
ax.set_ylabel("test accuracy (%, last epoch)")
ax.grid(alpha=0.3)
ax.legend(loc="lower right")
plt.show()
""",
        figure=(
            "fig-ch4-anytime",
            "Anytime prediction: test accuracy of each BYOT exit against the FLOPs of one "
            "prediction (mean and std over three seeds), beside the student trained alone and "
            "the ensembles of Born-Again generations, which buy accuracy with inference cost "
            "instead of saving it.",
        ),
    ),
    md(
        """
Two claims can be read off this figure. The first is the premise of an anytime network:
deeper exits are more accurate. We test each step in depth image by image, exit 2 against
exit 1 and the deepest exit against exit 2.
"""
    ),
    code(
        """
steps = [versus("byot/exit2", "byot/exit1"),
         versus("byot/student", "byot/exit2")]  # fmt: skip
depth_holds = all(g["low"] > 0 for g in steps)
if CHECK_CLAIMS:
    assert depth_holds, f"deeper is not surely better: {list(map(interval, steps))}"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: accuracy increases with depth")
print(f"  exit 2 - exit 1:  {interval(steps[0])} points")
print(f"  deepest - exit 2: {interval(steps[1])} points")
""",
        tags=["claim"],
    ),
    md(
        r"""
The second is BYOT's promise that the extra supervision of the early stages also helps the
*deepest* exit, so that the network is better than the same network trained alone even when
it never stops early. The paper reports it for ResNets on CIFAR-100, trained for far longer
than here; our network is a 24k-parameter CNN trained for 20 epochs.
"""
    ),
    code(
        """
byot_gain = byot_rows["student"][2]
if CHECK_CLAIMS:
    assert byot_gain["low"] > 0, f"BYOT's deepest exit: {interval(byot_gain)}"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: BYOT's deepest exit beats the")
print(f"student alone by {interval(byot_gain)} points (95% interval over")
print(f"the test images); McNemar better/worse in {byot_gain['better']}/"
      f"{byot_gain['worse']} of {byot_gain['seeds']} seeds")  # fmt: skip
for key in ("gain", "low", "high"):
    glue(f"byot_{key}", byot_gain[key], display=False)
""",
        tags=["claim"],
    ),
    md(
        r"""
On `shapes` the deepest exit gains {glue:text}`byot_gain:+.2f` points over the student alone
(95% interval {glue:text}`byot_low:+.2f` to {glue:text}`byot_high:+.2f`), and the first exit
reaches {glue:text}`byot_exit1_acc:.1f`% for {glue:text}`exit1_mflops:.2f` of the
network's {glue:text}`student_mflops:.2f` MFLOPs. Notice where the exits' FLOPs go: the
first stage of `cnn_wide_s2` is cheap, but its exit's bottleneck works on a 16x16 map, so an
exit is not free; a network designed for early exits puts cheaper heads there.

## Born-Again Networks: generations of one architecture

Furlanello et al. {cite}`furlanello2018born` asked what happens when the teacher of KD is
not a larger network but *the same* architecture: train generation 0 on the labels, then
train a freshly initialised generation 1 by KD from it, generation 2 from generation 1, and
so on. Each generation $k+1$ minimises Hinton's loss {cite}`hinton2015distilling` with
generation $k$, frozen, as the teacher,

$$
\mathcal{L}_{k+1} = \lambda_{CE}\,\mathrm{CE}(z_{k+1}, y)
+ \lambda_{KD}\,\frac{T^2}{B} \sum_b
  \mathrm{KL}\big(p^T_k(x_b) \,\big\|\, p^T_{k+1}(x_b)\big),
$$

and the generations can be ensembled (averaging their probabilities) at the end. The book's
`ban` method keeps KD's weights ($\lambda_{CE} = 0.1$, $\lambda_{KD} = 0.9$, $T = 4$), so
that Born-Again and offline KD differ only in the teacher; the paper's own weights are not
verified here. Every generation costs a full training run, and an ensemble of $g+1$
generations costs $g+1$ forward passes per image.

The loop over generations is the experiment, so here it is, written with the package's
pieces: `fit` for each run, `build_distiller("ban", fresh_student, previous)` for each
generation, and the same batches (`fit(seed=...)`) but an independent initialisation
(`seed + 1000 g`) for each generation, as the suite does. We run it for seed 0
(generations 0 to {glue:text}`live_generations`) and check that it reproduces the suite's
rows.
"""
    ),
    code(
        """
SCHEDULE = dict(epochs=preset.epochs, batch_size=preset.batch_size,
                lr=preset.lr, schedule=preset.schedule,
                milestones=preset.milestones, augment=preset.augment,
                **preset.train)  # the protocol's SGD: 20 epochs at book scale


def born_again(generations, seed):
    networks = []
    for g in range(generations + 1):
        seed_everything(seed + 1000 * g)  # an independent initialisation
        student = build_model(STUDENT, num_classes=10)
        if g == 0:  # generation 0: the labels alone
            distiller = build_distiller("scratch", student)
        else:  # KD from the previous generation, frozen
            distiller = build_distiller("ban", student, networks[-1])
        fit(distiller, train, test, seed=seed, **SCHEDULE)  # same batches
        networks.append(student.eval().requires_grad_(False))
    return networks


def score(log_probs):
    return 100 * (log_probs.argmax(dim=1) == test.targets).float().mean().item()


LIVE_GENERATIONS = by_scale(smoke=3, book=1, scale=SCALE)  # book: 2 runs
glue("live_generations", LIVE_GENERATIONS, display=False)
generations = born_again(LIVE_GENERATIONS, SEED)
logits = [predict_logits(net, test)[0] for net in generations]
pairs = []  # (network, ours, the suite's), seed SEED
for g in range(LIVE_GENERATIONS + 1):
    row = runs(BASELINE if g == 0 else f"ban/gen{g}")[seeds.index(SEED)]
    ours = score(F.log_softmax(logits[g], dim=1))
    pairs.append((f"gen {g}", ours, row["last_acc"]))
    if g > 0:
        row = runs(f"ban/ens0-{g}")[seeds.index(SEED)]
        ours = score(ensemble_log_probs(logits[: g + 1]))
        pairs.append((f"ens 0-{g}", ours, row["last_acc"]))
print(f"seed {SEED}:  {'ours':>6} {'suite':>6}")
for name, ours, suite in pairs:
    print(f"{name:<9} {ours:>6.2f} {suite:>6.2f}")
same = all(abs(ours - suite) < 0.005 for _, ours, suite in pairs)
print(f"the same accuracies as the suite's rows: {same}")
"""
    ),
    md(
        """
The loop above *is* the suite's experiment (`kdtutor.bench.schemes` makes the same calls),
so on the machine and the library versions that produced the CSV the two columns agree to
the image; elsewhere they may differ by a few images, as floating-point sums do across
machines (the last line says which happened here). The suite ran the chain to generation 3
on three seeds; per generation (and in {numref}`fig-ch4-ban`):
"""
    ),
    code(
        """
GENS = [0, 1, 2, 3]
single = [BASELINE] + [f"ban/gen{g}" for g in GENS[1:]]
ensembles = [None] + [f"ban/ens0-{g}" for g in GENS[1:]]
print(f"{'gen':>3} {'alone %':>14} {'ensemble 0..g %':>16} {'run':>6} "
      f"{'total':>6} {'infer':>6}")  # fmt: skip
print(f"{'':>3} {'':>14} {'':>16} {'TFLOPs':>6} {'TFLOPs':>6} {'MFLOPs':>6}")
for g, s, e in zip(GENS, single, ensembles, strict=True):
    acc, std = accuracy(s)
    ens = "" if e is None else "{:.2f} ± {:.2f}".format(*accuracy(e))
    infer = cost(s if e is None else e, "infer_flops") / 1e6
    print(f"{g:>3} {acc:>6.2f} ± {std:4.2f} {ens:>16} "
          f"{cost(s, 'train_flops') / 1e12:>6.2f} "
          f"{cost(s, 'total_flops') / 1e12:>6.2f} {infer:>6.2f}")  # fmt: skip
"""
    ),
    code(
        """
fig, (left, right) = subplots(1, 2, size=(11, 4.2))
left.errorbar(GENS, [accuracy(m)[0] for m in single],
              yerr=[accuracy(m)[1] for m in single], fmt="o-", capsize=3,
              label="generation g alone")  # fmt: skip
left.errorbar(GENS[1:], [accuracy(m)[0] for m in ensembles[1:]],
              yerr=[accuracy(m)[1] for m in ensembles[1:]], fmt="s--",
              capsize=3, label="ensemble of generations 0..g")  # fmt: skip
left.set_xticks(GENS)
left.set_xlabel("generation g (0: the student alone)")
left.set_ylabel("test accuracy (%, last epoch)")
left.legend()
left.grid(alpha=0.3)
right.bar(GENS, [cost(m, "total_flops") / 1e12 for m in single],
          color="tab:grey")  # fmt: skip
right.set_xticks(GENS)
right.set_xlabel("generation g")
right.set_ylabel("training cost of generations 0..g (TFLOPs)")
right.grid(axis="y", alpha=0.3)
plt.show()
""",
        figure=(
            "fig-ch4-ban",
            "Born-Again generations of cnn_wide_s2 (mean and std over three seeds): each "
            "generation alone and the ensemble of generations 0 to g (left), and the training "
            "FLOPs the chain has spent up to generation g (right), which grow linearly.",
        ),
    ),
    md(
        """
The paper's central observation is that generation 1 beats its own teacher, generation 0,
although both have the same architecture and see the same images: the soft targets carry
something the labels do not. We test it against the student alone, which *is* generation 0
of each seed's chain.
"""
    ),
    code(
        """
gen1 = versus("ban/gen1", BASELINE)
if CHECK_CLAIMS:
    assert gen1["low"] > 0, f"BAN generation 1 vs 0: {interval(gen1)}"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: Born-Again generation 1 beats")
print(f"generation 0 by {interval(gen1)} points;")
print(f"McNemar better/worse in {gen1['better']}/{gen1['worse']} "
      f"of {gen1['seeds']} seeds")  # fmt: skip
for key in ("gain", "low", "high"):
    glue(f"ban_gen1_{key}", gen1[key], display=False)
""",
        tags=["claim"],
    ),
    md(
        """
An ensemble of independently trained networks is usually better than its best member. The
generations are not independent (each learnt from the last), so their errors may be more
alike; the claim is that the ensemble of generations 0 to 2 still beats the best of them.
We pick the best generation by its mean test accuracy, which favours the single network, so
the test is conservative.
"""
    ),
    code(
        """
members = [BASELINE, "ban/gen1", "ban/gen2"]
best = max(members, key=lambda m: accuracy(m)[0])
ens = versus("ban/ens0-2", best)
if CHECK_CLAIMS:
    assert ens["low"] > 0, f"ensemble of gens 0-2 vs {best}: {interval(ens)}"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: the ensemble of generations 0-2")
print(f"beats the best of them ({best}) by {interval(ens)} points,")
print(f"at {cost('ban/ens0-2', 'infer_flops') / cost(best, 'infer_flops'):.0f}"
      " times its inference cost")  # fmt: skip
for key in ("gain", "low", "high"):
    glue(f"ban_ens_{key}", ens[key], display=False)
""",
        tags=["claim"],
    ),
    md(
        r"""
Generation 1 gains {glue:text}`ban_gen1_gain:+.2f` points over generation 0 (95% interval
{glue:text}`ban_gen1_low:+.2f` to {glue:text}`ban_gen1_high:+.2f`), and the ensemble of
generations 0 to 2 gains {glue:text}`ban_ens_gain:+.2f` over its best member
({glue:text}`ban_ens_low:+.2f` to {glue:text}`ban_ens_high:+.2f`). Keep the costs in view
when reading these numbers: generation $g$ has cost $g+1$ training runs, and the ensemble
costs $g+1$ networks at every prediction; the page {doc}`equal-cost` asks whether the student
alone, trained for as many FLOPs, would do as well.

## CS-KD: the same class as the teacher

CS-KD {cite}`yun2020cskd` needs neither a second network nor a second run. For every
training image $x$ with label $y$ it draws another image $x'$ of the same class, and asks the
network's softened prediction on $x$ to match its prediction on $x'$:

$$
\mathcal{L} = \mathrm{CE}(z(x), y)
+ \lambda\,\frac{T^2}{B}\sum_{b=1}^{B}
  \mathrm{KL}\big(p^T(x'_b;\tilde\theta) \,\big\|\, p^T(x_b;\theta)\big),
$$

with $\tilde\theta$ the current weights treated as constants (the partners' forward runs
without gradients), $T = 4$ and $\lambda = 1$, the authors' CIFAR settings. Images of one
class are pulled towards the same distribution over the *wrong* classes, which regularises
the "dark knowledge" of a single network: an over-confident network is not rewarded for a
prediction that its own view of the class does not share. The partner of each image is drawn
anew every epoch (`kdtutor.methods.cskd.class_partners`; {numref}`fig-ch4-cskd-pairs` shows
a few pairs), so each step sees 64 anchors and their 64 partners.
"""
    ),
    code(
        """
partners = class_partners(train.targets, SEED, epoch=0)
assert torch.equal(train.targets[partners], train.targets)  # same class
assert bool((partners != torch.arange(len(train))).all())  # another image
fig, axes = subplots(2, 6, size=(10, 3.8))
for j in range(6):
    for row, index in enumerate((j, int(partners[j]))):
        ax = axes[row, j]
        ax.imshow(train.images[index].permute(1, 2, 0).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(train.classes[int(train.targets[index])], fontsize=9)
        ax.set_xlabel(f"image {index}", fontsize=8)
axes[0, 0].set_ylabel("anchor x")
axes[1, 0].set_ylabel("partner x'")
plt.show()
""",
        figure=(
            "fig-ch4-cskd-pairs",
            "The first six training images (top) and the partner CS-KD draws for each in the "
            "first epoch (bottom): another image of the same class, with its own size, "
            "position and colour. The network's softened prediction on the partner is the "
            "anchor's soft target.",
        ),
    ),
    md(
        """
The loss from scratch on one batch: the anchors are the first 64 training images, the
partners come from the same table as above, and the package's distiller, bound to the
training set, must return the same two terms.
"""
    ),
    code(
        """
def my_cskd_loss(logits, pair_logits, y, T=4.0, lam=1.0):
    log_p = F.log_softmax(logits / T, dim=1)
    log_q = F.log_softmax(pair_logits.detach() / T, dim=1)  # the partner's
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()
    return F.cross_entropy(logits, y) + lam * T**2 * kl


seed_everything(SEED)
student = build_model(STUDENT, num_classes=10)
cskd = build_distiller("cskd", student).train()
cskd.bind_data(train, seed=SEED)  # fit does this: the partner table
assert torch.equal(cskd.partners, partners)
index = torch.arange(64)
x, y = train.batch(index)
x_pair, _ = train.batch(partners[index])
logits = student(x)
with torch.no_grad():  # no gradient reaches the partner's prediction
    pair_logits = student(x_pair)
mine = my_cskd_loss(logits, pair_logits, y)
_, package = cskd(x, y, index)
torch.testing.assert_close(mine, sum(package.values()))
print("my_cskd_loss agrees with build_distiller('cskd', ...):")
print("  " + ", ".join(f"{k} {v.item():.4f}" for k, v in package.items()))
"""
    ),
    md(
        r"""
## Tf-KD self: Born-Again's first generation, weighted otherwise

Yuan et al. {cite}`yuan2020revisiting` train the student once alone, then train a fresh
student by KD from that trained copy: Tf-KD's *self* mode. That is exactly Born-Again's
generation 1. The only differences are the weights: Tf-KD writes the loss as
$(1-\alpha)\,\mathrm{CE} + \alpha\,m\,T^2\,\mathrm{KL}$, with the authors' $\alpha = 0.95$,
$T = 6$ and a multiplier $m$ (0.5 here, see `kdtutor.methods.tfkd`), so with
$\lambda_{CE} = 1 - \alpha$, $\lambda_{KD} = \alpha m$ and its $T$, `ban` computes the same
loss. We check it on one batch, with an untrained copy standing in for the teacher.
"""
    ),
    code(
        """
seed_everything(SEED + 1)
copy = build_model(STUDENT, num_classes=10).eval()
seed_everything(SEED)
student = build_model(STUDENT, num_classes=10)
tfkd = build_distiller("tfkd", student, copy, mode="self")
alpha, T_tf, m = tfkd.hparams.resolved()
as_ban = build_distiller("ban", student, copy, ce_weight=1 - alpha,
                         kd_weight=alpha * m, T=T_tf)  # fmt: skip
ban_hp = build_distiller("ban", student, copy).hparams  # the suite's BAN
x, y = train.batch(torch.arange(64))
with torch.no_grad():
    tf_losses = tfkd(x, y)[1]
    ban_losses = as_ban(x, y)[1]
torch.testing.assert_close(sum(tf_losses.values()), sum(ban_losses.values()))
print("Tf-KD self = ban with other weights, on one batch:")
print(f"{'':<12} {'ce weight':>9} {'kd weight':>9} {'T':>4} {'kd/ce':>6}")
for name, (ce_w, kd_w, temp) in {
    "BAN (suite)": (ban_hp.ce_weight, ban_hp.kd_weight, ban_hp.T),
    "Tf-KD self": (1 - alpha, alpha * m, T_tf),
}.items():
    print(f"{name:<12} {ce_w:>9.3f} {kd_w:>9.3f} {temp:>4g} "
          f"{kd_w / ce_w:>6.1f}")  # fmt: skip
glue("tfkd_total_weight", (1 - alpha) + alpha * m, display=False)
"""
    ),
    md(
        """
The two put almost the same weight on the soft targets relative to the labels; Tf-KD softens
them more ($T = 6$ against 4) and its two weights add up to
{glue:text}`tfkd_total_weight:.3f` instead of 1, which with plain SGD acts like a smaller
learning rate. In the suite, `tfkd_self` is taught by the seed's `scratch` run (generation 0)
and starts from the same initial weights as it, while `ban/gen1` starts from another draw.

## Every self-distilled network against the student alone

{numref}`fig-ch4-self-gains` puts all of this page's networks side by side: each one's gain
over the student trained alone, with its interval over the test images. The rows differ in
what they cost, which the table beside it gives: `total` is every training FLOP the network
needed (its run and the runs before it), `infer` the FLOPs of one prediction.
"""
    ),
    code(
        """
NETWORKS = ([f"byot/{n}" for n in BYOT_NETS]
            + [f"ban/gen{g}" for g in (1, 2, 3)]
            + [f"ban/ens0-{g}" for g in (1, 2, 3)]
            + ["tfkd_self/student", "cskd/student"])  # fmt: skip
gains = {g["method"]: g for g in gains_with_intervals(
    [r for r in rows if r["method"] in (*NETWORKS, BASELINE)], N_TEST,
    baseline=BASELINE)}  # fmt: skip
print(f"{'network':<18} {'acc %':>14} {'gain [95%]':>22} {'+/-':>4} "
      f"{'total':>6} {'infer':>6}")  # fmt: skip
print(f"{'':<18} {'':>14} {'':>22} {'':>4} {'TFLOPs':>6} {'MFLOPs':>6}")
for name in [BASELINE, *NETWORKS]:
    total = cost(name, "total_flops") / 1e12
    infer = cost(name, "infer_flops") / 1e6
    if name == BASELINE:
        print(f"{name:<18} {scratch_acc:>6.2f} ± {scratch_std:4.2f} "
              f"{'':>22} {'':>4} {total:>6.2f} {infer:>6.2f}")  # fmt: skip
        continue
    g = gains[name]
    print(f"{name:<18} {g['acc']:>6.2f} ± {g['acc_std']:4.2f} "
          f"{interval(g):>22} {g['better']}/{g['worse']} "
          f"{total:>6.2f} {infer:>6.2f}")  # fmt: skip
"""
    ),
    code(
        """
COLORS = {"byot": "tab:orange", "ban": "tab:grey", "tfkd_self": "tab:green",
          "cskd": "tab:purple"}  # fmt: skip
fig, ax = subplots(size=(8, 5.5))
for y_, name in enumerate(NETWORKS):
    g = gains[name]
    ax.errorbar(g["gain"], y_, fmt="o", capsize=3,
                xerr=[[g["gain"] - g["low"]], [g["high"] - g["gain"]]],
                color=COLORS[name.split("/")[0]])  # fmt: skip
ax.axvline(0, color="black", lw=1)
ax.set_yticks(range(len(NETWORKS)), NETWORKS)
ax.invert_yaxis()
ax.set_xlabel(f"gain over {STUDENT} alone (points, mean of seeds)")
ax.set_ylabel("network")
ax.grid(axis="x", alpha=0.3)
plt.show()
""",
        figure=(
            "fig-ch4-self-gains",
            "Each self-distilled network's gain over the student trained alone (mean of three "
            "seeds, last epoch) with its 95% interval over the 10,000 test images (paired "
            "bootstrap). BYOT's exits and BAN's ensembles are scored from the same runs as "
            "their deepest exit and generations.",
        ),
    ),
    md(
        """
The last two candidate claims ask whether the single-network schemes, which cost one
network at test time, beat the student alone: CS-KD, whose training costs one extra forward
pass per image, and Tf-KD self, which costs a second training run.
"""
    ),
    code(
        """
cskd_gain = gains["cskd/student"]
if CHECK_CLAIMS:
    assert cskd_gain["low"] > 0, f"CS-KD vs alone: {interval(cskd_gain)}"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: CS-KD beats the student alone by")
print(f"{interval(cskd_gain)} points; McNemar better/worse in "
      f"{cskd_gain['better']}/{cskd_gain['worse']} "
      f"of {cskd_gain['seeds']} seeds")  # fmt: skip
for key in ("gain", "low", "high"):
    glue(f"cskd_{key}", cskd_gain[key], display=False)
""",
        tags=["claim"],
    ),
    code(
        """
tfkd_gain = gains["tfkd_self/student"]
if CHECK_CLAIMS:
    assert tfkd_gain["low"] > 0, f"Tf-KD self vs alone: {interval(tfkd_gain)}"
VERDICT = "holds" if CHECK_CLAIMS else "not checked"
print(f"claim {VERDICT} at {SCALE} scale: Tf-KD self beats the student alone")
print(f"by {interval(tfkd_gain)} points; McNemar better/worse in "
      f"{tfkd_gain['better']}/{tfkd_gain['worse']} "
      f"of {tfkd_gain['seeds']} seeds")  # fmt: skip
for key in ("gain", "low", "high"):
    glue(f"tfkd_{key}", tfkd_gain[key], display=False)
""",
        tags=["claim"],
    ),
    md(
        """
CS-KD gains {glue:text}`cskd_gain:+.2f` points (95% interval {glue:text}`cskd_low:+.2f` to
{glue:text}`cskd_high:+.2f`) and Tf-KD self {glue:text}`tfkd_gain:+.2f`
({glue:text}`tfkd_low:+.2f` to {glue:text}`tfkd_high:+.2f`). The published gains of these
schemes (chapter {doc}`equal-cost` sets them beside ours) were measured on CIFAR-100 with
ResNet- and MobileNet-sized networks trained for hundreds of epochs, long enough to fit their
training sets, where the regularisation of soft targets has something to correct. A
24k-parameter CNN trained for 20 epochs is more likely to underfit than to overfit (a guess:
the suite records test accuracy only), and a regulariser has less to give a network that
underfits, so a gain that is small or within the noise here says something about the setting
as much as about the scheme.

## Exercises

````{exercise} The CS-KD loss
:label: ex-ch4-cskd-loss

Write `my_cskd_loss(logits, pair_logits, y, T, lam)` that returns CS-KD's loss for a batch:
the cross entropy of the anchors' logits plus $\\lambda T^2$ times the batch mean of
$\\mathrm{KL}(p^T(x') \\,\\|\\, p^T(x))$, with the partners' logits treated as constants.
Check it with `kdtutor.coursework.schemes.check_cskd_loss(my_cskd_loss)`, which tries it on
batches of 1 to 64 images, 3 to 100 classes, $T$ from 1 to 10, $\\lambda$ from 0.5 to 3 and
extreme logits, compares its gradient with a reference, and checks that no gradient reaches
the partners' logits.
````

````{solution} ex-ch4-cskd-loss
:class: dropdown

Work in log-probabilities, so that a very confident partner (a probability that underflows
to 0) gives $0 \\cdot \\log 0 = 0$ instead of `nan`, and detach the partner's logits:

```python
def my_cskd_loss(logits, pair_logits, y, T, lam):
    log_p = F.log_softmax(logits / T, dim=1)
    log_q = F.log_softmax(pair_logits.detach() / T, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()
    return F.cross_entropy(logits, y) + lam * T**2 * kl


check_cskd_loss(my_cskd_loss)
```

Forgetting `.detach()` changes no value, only the gradient: the partner would be pulled
towards the anchor as well, and the checker says so.
````
"""
    ),
    code(
        """
from kdtutor.coursework.schemes import check_cskd_loss


def my_cskd_loss(logits, pair_logits, y, T, lam):
    log_p = F.log_softmax(logits / T, dim=1)
    log_q = F.log_softmax(pair_logits.detach() / T, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()
    return F.cross_entropy(logits, y) + lam * T**2 * kl


check_cskd_loss(my_cskd_loss);
""",
        tags=["nbval-check-output"],
    ),
    md(
        r"""
````{exercise} The price of an exit
:label: ex-ch4-exit-flops

Count by hand the multiply-adds of one image through BYOT's first exit on `cnn_wide_s2`:
stage 0's convolution, then the three convolutions of the bottleneck and the linear layer
(print `byot.heads[0]` and `byot.student.stages[0]` for their shapes; a convolution with
$C_{in}$ inputs, $C_{out}$ outputs, a $k \times k$ kernel and an $H \times W$ output does
$C_{in} C_{out} k^2 H W$ multiply-adds, and ignore batch norm, ReLU, pooling and biases). Does
your count match `network_flops(exit_networks(byot)["exit1"], (3, 32, 32))`, which counts a
multiply-add as two FLOPs (a multiplication and an addition) per image? Which layer costs the
most, and how would you make the exit cheaper?
````

````{solution} ex-ch4-exit-flops
:class: dropdown

```python
def conv_macs(conv, out_hw):
    k_h, k_w = conv.kernel_size
    return conv.in_channels * conv.out_channels * k_h * k_w * out_hw

stem = byot.student.stages[0].blocks[0].conv    # 3 -> 16, 3x3, 16x16 output
b = byot.heads[0].bottleneck
by_hand = (conv_macs(stem, 16 * 16)
           + conv_macs(b[0], 16 * 16)           # 1x1, 16 -> 16
           + conv_macs(b[3], 4 * 4)             # 4x4 stride 4, 16 -> 16
           + conv_macs(b[6], 4 * 4)             # 1x1, 16 -> 64
           + 64 * 10)                           # the linear layer
print(2 * by_hand, network_flops(exit_networks(byot)["exit1"], (3, 32, 32)))
```

The two agree once a multiply-add counts twice. The stem, which the exit shares with the
network, costs the most; of the head's own layers, the first 1x1 convolution (16 x 16
channels at all 16x16 positions) and the strided 4x4 convolution (16 x 16 channels x 16
kernel taps at 4x4 positions) cost the same, and the last 1x1 convolution a quarter of
that. Pooling the map before the bottleneck, or a stride in its first convolution, makes
the exit cheaper, at some cost in what it sees.
````

````{exercise} Why the deepest exit is detached
:label: ex-ch4-detach

In `my_byot_losses` the deepest exit's softened prediction and features are detached before
they teach the shallow exits. Remove both `.detach()` calls and compute, on one batch, the
gradient of the KD and hint terms of exit 1 with respect to the deepest exit's logits `z_deep`
(use `torch.autograd.grad` with `retain_graph=True`). What would that gradient do to the
deepest exit during training, and why do BYOT's authors not want it?
````

````{solution} ex-ch4-detach
:class: dropdown

With the detach, the gradient is zero: only the shallow exit moves. Without it, the KD term
also pulls the deepest prediction towards the shallow exit's (a KL divergence has a gradient
in both arguments), and the hint pulls the deepest features towards the bottleneck's. The
teacher would then be dragged towards its weaker students, the opposite of what the scheme
wants: the deepest exit is the one that is deployed when there is no budget constraint, and
it should learn from the labels (and, through the shared early stages, from the extra
supervision), not from predictions that are worse than its own.
````

````{exercise} Ensembles at a price
:label: ex-ch4-ensembles

From the table of {numref}`fig-ch4-self-gains`, compare two ways of spending inference FLOPs
on more accuracy: BYOT's ensemble of exits and Born-Again's ensemble of generations 0 and 1.
Compute for each its gain over the student alone per extra MFLOP of inference, and its total
training cost. Which would you deploy on a device with a budget of 2 MFLOPs per image, and
which if training were the expensive part?
````

````{solution} ex-ch4-ensembles
:class: dropdown

```python
for name in ("byot/ensemble", "ban/ens0-1"):
    extra = (cost(name, "infer_flops") - cost(BASELINE, "infer_flops")) / 1e6
    g = gains[name]
    print(f"{name}: {g['gain']:+.2f} points for {extra:.2f} extra MFLOPs "
          f"({g['gain'] / extra:+.2f} per MFLOP), "
          f"{cost(name, 'total_flops') / 1e12:.2f} training TFLOPs")
```

BYOT's ensemble costs the network plus its two heads and one training run with heads; the
ensemble of two generations costs twice the student at every prediction and two training
runs. Under a 2 MFLOP budget only BYOT's ensemble fits; when
training is the expensive part, BYOT is also the cheaper of the two. Which one gives more
accuracy per MFLOP is what the numbers above decide, with their intervals: a gain whose
interval covers 0 buys nothing for sure.
````

## Summary

- Self-distillation replaces the teacher by a part of the network (BYOT's deepest exit), an
  earlier copy of it (Born-Again generations, Tf-KD self) or its own predictions on other
  images of the class (CS-KD).
- BYOT's exits make the network an anytime classifier: read it as accuracy against the FLOPs
  of each exit; its loss trains every exit on the labels and the shallow ones on the deepest
  exit's soft targets and pooled features, both treated as constants.
- A Born-Again generation is KD from the previous generation of the same architecture; each
  costs a training run, each ensemble member a forward pass per prediction. Tf-KD's self
  mode is generation 1 with other weights.
- CS-KD's soft target is the network's own softened prediction on another image of the same
  class, drawn anew each epoch; it costs one extra forward pass per training image.
- Whether any of them beats the student alone is a measurement with an interval, and the
  comparison that matters for a budget is at equal cost ({doc}`equal-cost`).

## References

- {cite}`zhang2019byot`: Be Your Own Teacher, exits taught by the deepest exit.
- {cite}`furlanello2018born`: Born-Again Networks and their ensembles.
- {cite}`yun2020cskd`: class-wise self-knowledge distillation (CS-KD).
- {cite}`yuan2020revisiting`: Tf-KD, knowledge distillation without a stronger teacher.
- {cite}`hinton2015distilling`: the KD loss every generation uses.
- {cite}`mcnemar1947`: McNemar's test of paired proportions.
- {cite}`kaleem2024review`: the survey's section on distillation schemes.
"""
    ),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    nbformat.write(build(), OUT)
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
