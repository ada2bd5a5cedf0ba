"""Quantized distillation (design note algorithms.md, section 2.7): fake-quantized training and
int8 conversion with torch's FX tooling (``kdtutor.qat``) and KD into a fake-quantized student
(``qat``, Apprentice: Mishra & Marr 2018)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor import qat
from kdtutor.compression import stored_size_mb
from kdtutor.config import ConfigError
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.train import fit

torch.set_num_threads(1)


class TinyLinear(nn.Module):
    """Flatten then one linear layer: one weight quantizer and two activation quantizers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


def fq_by_hand(r: np.ndarray, scale, zero, qmin: int, qmax: int) -> np.ndarray:
    """Quantize-dequantize: S (clamp(round(r / S) + Z, qmin, qmax) - Z), round half to even."""
    return (np.clip(np.round(r / scale) + zero, qmin, qmax) - zero) * scale


def observed(fq) -> tuple[np.ndarray, np.ndarray, int, int]:
    return (
        fq.scale.detach().double().numpy(),
        fq.zero_point.detach().double().numpy(),
        int(fq.quant_min),
        int(fq.quant_max),
    )


@pytest.fixture(scope="module")
def shapes_x(tiny_data):
    x, _ = tiny_data.train.batch(range(200))
    return x


# -- kdtutor.qat -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quantized_forward_equals_quantize_dequantize_by_hand(bits):
    torch.manual_seed(0)
    model = TinyLinear()
    x = torch.randn(16, 3, 2, 2)
    prepared = qat.prepare_qat(model, bits, x)
    for _ in range(3):  # the observers record ranges
        prepared(torch.randn(16, 3, 2, 2) * 2)
    qat.freeze(prepared)
    prepared.eval()
    got = prepared(x).detach().double().numpy()

    quantizers = qat.fake_quantizers(prepared)
    acts = [quantizers[n] for n in sorted(quantizers) if n.startswith("activation_post_process")]
    assert len(acts) == 2 and "fc.weight_fake_quant" in quantizers
    s_in, z_in, lo, hi = observed(acts[0])
    s_w, z_w, wlo, whi = observed(quantizers["fc.weight_fake_quant"])
    s_out, z_out, _, _ = observed(acts[1])
    assert (lo, hi, wlo, whi) == ((0, 127, -128, 127) if bits == 8 else (0, 15, -8, 7))
    assert np.all(z_w == 0)  # per-channel symmetric weights

    xin = fq_by_hand(x.flatten(1).double().numpy(), s_in, z_in, lo, hi)
    w = model.fc.weight.detach().double().numpy()
    wq = fq_by_hand(w, s_w[:, None], z_w[:, None], wlo, whi)
    hidden = xin @ wq.T + model.fc.bias.detach().double().numpy()
    want = fq_by_hand(hidden, s_out, z_out, lo, hi)
    # float32 (torch) against float64 (NumPy): the same grid point, up to float32 rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the fake-quantized weights in the model are exactly the hand's grid values (float32)
    wfq = quantizers["fc.weight_fake_quant"](model.fc.weight.detach()).double().numpy()
    np.testing.assert_allclose(wfq, wq, rtol=0, atol=1e-6)


def test_four_bits_gives_sixteen_levels_per_tensor(shapes_x):
    torch.manual_seed(0)
    prepared = qat.prepare_qat(build_model("cnn_tiny"), 4, shapes_x[:8])
    prepared(shapes_x)
    quantizers = qat.fake_quantizers(prepared)
    weight = prepared.get_submodule("fc")
    w_levels = torch.round(
        quantizers["fc.weight_fake_quant"](weight.weight.detach())
        / quantizers["fc.weight_fake_quant"].scale[:, None]
    )
    assert w_levels.min() >= -8 and w_levels.max() <= 7
    for row in w_levels:  # each output channel's levels lie in [-8, 7]: at most 16
        assert len(torch.unique(row)) <= 16
    x_fq = quantizers["activation_post_process_0"]
    spread = torch.linspace(-10, 10, 10_000)  # wider than the observed range: every level hit
    assert len(torch.unique(x_fq(spread))) == 16
    eight = qat.prepare_qat(build_model("cnn_tiny"), 8, shapes_x[:8])
    eight(shapes_x)
    # x86's default 8-bit activations use 7 bits (reduce_range): 128 levels
    assert len(torch.unique(qat.fake_quantizers(eight)["activation_post_process_0"](spread))) == 128


@pytest.mark.parametrize("bits", [8, 4])
def test_int8_model_matches_the_fake_quantized_one_within_a_few_output_steps(bits, shapes_x):
    """Both outputs lie on the last fake quantizer's grid (step S_out), and differ only where the
    int8 kernels round differently: they accumulate in int32 with the bias quantized to scale
    S_in * S_w and requantize each layer's output, while fake quantization computes in float32
    and rounds once per quantizer. Each of cnn_tiny's 5 quantized layers can move its output
    by one step, which can move the logits by a step each: we allow 4 steps per logit (seen:
    2 at 8 bits, 3 at 4 bits), a mean under half a step (seen: 0.35 and 0.28)."""
    torch.manual_seed(0)
    prepared = qat.prepare_qat(build_model("cnn_tiny"), bits, shapes_x[:8])
    for i in range(0, 200, 50):
        prepared(shapes_x[i : i + 50])
    qat.freeze(prepared).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # kdtutor.qat silences torch's notices at their source
        converted = qat.convert_int8(prepared)
    with torch.no_grad():
        fake, int8 = prepared(shapes_x), converted(shapes_x)
    quantizers = qat.fake_quantizers(prepared)
    last = max(
        (n for n in quantizers if n.startswith("activation_post_process")),
        key=lambda n: int(n.rsplit("_", 1)[1]),
    )
    step = quantizers[last].scale.item()
    steps = (fake - int8).abs() / step
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # both on the grid
    assert steps.max() <= 4
    assert steps.mean() < 0.5
    assert converted.num_classes == 10


def test_converted_model_is_smaller_as_stored(shapes_x):
    torch.manual_seed(0)
    model = build_model("cnn_wide_s2")
    prepared = qat.prepare_qat(model, 8, shapes_x[:8])
    prepared(shapes_x[:64])
    converted = qat.convert_int8(prepared)
    fp32, int8 = stored_size_mb(model), stored_size_mb(converted)
    assert int8 < 0.5 * fp32  # ~4x fewer bytes per weight, plus scales and per-layer metadata
    n = sum(p.numel() for p in model.parameters())
    assert qat.packed_size_mb(model, 4) == pytest.approx(n / 2 / 2**20)


def test_prepare_leaves_the_float_model_unchanged_and_freeze_stops_updates(shapes_x):
    torch.manual_seed(0)
    model = build_model("cnn_tiny")
    before = copy.deepcopy(model.state_dict())
    prepared = qat.prepare_qat(model, 8, shapes_x[:8])
    prepared(shapes_x)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    qat.freeze(prepared)
    fq = qat.fake_quantizers(prepared)["activation_post_process_0"]
    scale = fq.scale.clone()
    prepared(shapes_x * 3)
    assert torch.equal(fq.scale, scale)


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="bits=3"):
        qat.qconfig_mapping(3)
    with pytest.raises(UnknownNameError, match="backend"):
        qat.qconfig_mapping(8, "arm")
    with pytest.raises(KDTutorError, match=r"nn\.Module"):
        qat.prepare_qat("cnn_tiny")  # type: ignore[arg-type]

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: not traceable
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(KDTutorError, match="trace"):
        qat.prepare_qat(Branchy(), 8, torch.randn(2, 4))
    with pytest.raises(KDTutorError, match="prepare_qat"):
        qat.convert_int8(build_model("cnn_tiny"))
    with pytest.raises(KDTutorError, match="prepare_qat"):
        qat.freeze(build_model("cnn_tiny"))


# -- the qat method --------------------------------------------------------------------------------
def test_qat_distills_through_fit_into_a_fake_quantized_student(tiny_data, tiny_pair):
    student = tiny_pair.student
    before = copy.deepcopy(student.state_dict())
    d = build_distiller("qat", student, tiny_pair.teacher, {"bits": 4})
    assert d.family == "quantized"
    assert qat.fake_quantizers(d.student)  # the student trains fake-quantized
    result = fit(d, tiny_data.train, tiny_data.test, epochs=2, batch_size=50)
    assert np.isfinite(result.history[-1]["loss"])
    for key, value in student.state_dict().items():  # the user's float student is untouched
        assert torch.equal(value, before[key]), key
    # the last epoch froze the observers: scales no longer move
    fq = qat.fake_quantizers(d.student)["activation_post_process_0"]
    assert not bool(fq.observer_enabled)
    int8 = d.convert()
    x, _ = tiny_data.test.batch(range(20))
    assert int8(x).shape == (20, 10)


def test_qat_losses_are_kd_on_the_fake_quantized_logits(tiny_pair):
    from kdtutor.losses.response import kd_loss

    d = build_distiller("qat", tiny_pair.student, tiny_pair.teacher, {"bits": 8})
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    d.train()
    torch.manual_seed(1)
    logits, losses = d(x, y)
    assert set(losses) == {"ce", "kd"}
    with torch.no_grad():
        zt = tiny_pair.teacher(x)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert losses["ce"].item() == pytest.approx(0.1 * ce.item(), rel=1e-6)
    assert losses["kd"].item() == pytest.approx(0.9 * kd_loss(logits, zt, 4.0).item(), rel=1e-6)
    none = build_distiller("qat", tiny_pair.student, tiny_pair.teacher, {"kd_weight": 0.0})
    assert set(none(x, y)[1]) == {"ce"}  # QAT alone


def test_qat_refuses_bad_hparams_and_a_prepared_student(tiny_pair):
    with pytest.raises(ConfigError, match="bits"):
        build_distiller("qat", tiny_pair.student, tiny_pair.teacher, {"bits": 2})
    with pytest.raises(ConfigError, match="backend"):
        build_distiller("qat", tiny_pair.student, tiny_pair.teacher, {"backend": "gpu"})
    prepared = qat.prepare_qat(tiny_pair.student, 8)
    with pytest.raises(KDTutorError, match="already fake-quantized"):
        build_distiller("qat", prepared, tiny_pair.teacher)


def test_torch_deprecation_notice_is_silenced_only_inside_kdtutor_qat():
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    model = TinyLinear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat.prepare_qat(model, 8, torch.randn(2, 3, 2, 2))
        assert not [w for w in caught if "deprecated" in str(w.message)]
        prepare_qat_fx(model.train(), qat.qconfig_mapping(8), (torch.randn(2, 3, 2, 2),))
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


# -- the qkd method --------------------------------------------------------------------------------
def make_qkd(pair, **hparams):
    torch.manual_seed(0)
    return build_distiller("qkd", pair.student, pair.teacher, {"bits": 8, **hparams})


def test_qkd_phases_switch_losses_and_only_co_studying_trains_the_teacher(tiny_data, tiny_pair):
    d = make_qkd(tiny_pair)
    assert [d.phase_of(e) for e in range(5)] == [
        "self_study", "co_study", "co_study", "tutoring", "tutoring"
    ]  # fmt: skip
    assert set(d.optimizer_groups()) == {"student", "teacher"}
    given = copy.deepcopy(tiny_pair.teacher.state_dict())
    result = fit(d, tiny_data.train, tiny_data.test, epochs=4, batch_size=100)
    seen = [set(h["losses"]) for h in result.history]
    assert seen[0] == {"ce"}  # self-studying: no KD
    assert seen[1] == seen[2] == {"ce", "kd", "teacher_ce", "teacher_kl"}  # co-studying
    assert seen[3] == {"ce", "kd"}  # tutoring: the teacher is frozen
    for key, value in tiny_pair.teacher.state_dict().items():  # the given teacher is untouched
        assert torch.equal(value, given[key]), key
    moved = [
        not torch.equal(a, b)
        for a, b in zip(d.co_teacher.parameters(), tiny_pair.teacher.parameters(), strict=True)
    ]
    assert any(moved)
    assert d.teacher_cache is None  # never cached: the teacher changes


@pytest.mark.filterwarnings("error:Detected call of `lr_scheduler.step")
def test_qkd_without_co_studying_never_changes_its_teacher(tiny_data, tiny_pair):
    """Its teacher's group never steps: its schedule still follows the epochs, and torch's
    warning about a schedule stepped before its optimizer is not raised."""
    d = make_qkd(tiny_pair, co_study_epochs=0)
    result = fit(d, tiny_data.train, None, epochs=2, batch_size=100)
    assert result.history[1]["lr"] < result.history[0]["lr"]  # the cosine schedule moved
    state = tiny_pair.teacher.state_dict()
    for key, value in d.co_teacher.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_qkd_resumes_bit_identically_across_co_studying(tiny_data, tiny_pair, tmp_path):
    def make():
        return make_qkd(copy.deepcopy(tiny_pair))

    # interrupted once epoch 0 (self-studying) and epoch 1 (co-studying) are saved
    kw = {"epochs": 4, "batch_size": 100}
    interrupted_then_resumed(make, *tiny_data, tmp_path, after=2, same=("test_acc",), **kw)


def test_qkd_refuses_bad_phase_lengths(tiny_pair):
    with pytest.raises(ConfigError, match="self_study_epochs"):
        make_qkd(tiny_pair, self_study_epochs=-1)
    with pytest.raises(ConfigError, match="teacher_lr"):
        make_qkd(tiny_pair, teacher_lr=0.0)


def test_prepare_sizes_only_the_weight_observers_so_checkpoints_fit():
    torch.manual_seed(0)
    model = TinyLinear()
    prepared = qat.prepare_qat(model, 8, torch.randn(4, 3, 2, 2))
    quantizers = qat.fake_quantizers(prepared)
    weight_obs = quantizers["fc.weight_fake_quant"].activation_post_process
    w = model.fc.weight.detach()
    assert torch.equal(weight_obs.min_val, w.min(1).values)
    assert torch.equal(weight_obs.max_val, w.max(1).values)
    for name, fq in quantizers.items():
        assert bool(fq.observer_enabled), name  # observing again for training
        if name.startswith("activation_post_process"):  # no activation range recorded yet
            assert fq.activation_post_process.min_val.isinf().all(), name
