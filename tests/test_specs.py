"""Model specs (kdtutor.specs): the call form ``name(key=value,...)``, its canonical string,
the round trip string -> network -> string -> network, and the refusals.

Independent values: the parameter counts of the teacher family (design note
``docs/design/architecture.md``, section 2.2, counted there with ``model_summary``) and the
presets' own options (``cnn_wide_s2`` is ``convnet`` with widths (16, 32, 64), one block per
stage and a stride-2 stem), written out here by hand.
"""

from __future__ import annotations

import pytest
import torch

from kdtutor.errors import CheckpointError, KDTutorError, UnknownNameError
from kdtutor.models import build_model, model_summary
from kdtutor.specs import (
    ModelSpec,
    ModelSpecError,
    build_from_spec,
    format_model_spec,
    parse_model_spec,
)

torch.set_num_threads(1)


def _build(spec: str) -> torch.nn.Module:
    return build_from_spec(spec, num_classes=10, in_channels=3)


def _same_architecture(a: torch.nn.Module, b: torch.nn.Module) -> None:
    shapes_a = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    assert shapes_a == shapes_b
    sa, sb = model_summary(a, latency_runs=0), model_summary(b, latency_runs=0)
    assert (sa.flops, sa.params) == (sb.flops, sb.params)


# -------------------------------------------------------------------- the plain forms


@pytest.mark.parametrize(
    ("text", "kind", "name", "weights"),
    [
        ("cnn_tiny", "registry", "cnn_tiny", None),
        ("cnn_tiny:w.pt", "registry", "cnn_tiny", "w.pt"),
        ("cnn_tiny:/tmp/a(1).pt", "registry", "cnn_tiny", "/tmp/a(1).pt"),
        ("zoo:shapes_cnn_large", "zoo", "shapes_cnn_large", None),
        ("timm:resnet18:w.pt", "timm", "resnet18", "w.pt"),
    ],
)
def test_the_plain_forms_are_read_as_before(text, kind, name, weights):
    spec = parse_model_spec(text)
    assert (spec.kind, spec.name, spec.kwargs) == (kind, name, ())
    assert (None if spec.weights is None else str(spec.weights)) == weights
    assert str(spec) == text


# -------------------------------------------------------------------- the call form


def test_the_call_form_gives_name_options_and_weights():
    spec = parse_model_spec(" convnet(widths=[16, 32, 64], stem_stride=2 , dropout=0.25):w.pt ")
    assert spec.kind == "registry"
    assert spec.name == "convnet"
    assert spec.options == {"widths": (16, 32, 64), "stem_stride": 2, "dropout": 0.25}
    assert str(spec.weights) == "w.pt"
    assert spec.call == "convnet(dropout=0.25,stem_stride=2,widths=(16,32,64))"
    assert str(spec) == "convnet(dropout=0.25,stem_stride=2,widths=(16,32,64)):w.pt"


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("cnn_tiny", None, "cnn_tiny"),
        ("cnn_tiny", {}, "cnn_tiny"),
        ("convnet", {"widths": [8, 16], "stem_stride": 2}, "convnet(stem_stride=2,widths=(8,16))"),
        ("convnet", {"widths": (8,)}, "convnet(widths=(8,))"),
        ("m", {"b": ((1, 2), (3,)), "a": -1}, "m(a=-1,b=((1,2),(3,)))"),
        ("m", {"s": "a b", "t": True, "n": None, "f": 1e-3}, "m(f=0.001,n=None,s='a b',t=True)"),
        ("m", {"e": ()}, "m(e=())"),
    ],
)
def test_format_writes_the_canonical_string_and_parse_reads_it_back(name, kwargs, expected):
    assert format_model_spec(name, kwargs) == expected
    spec = parse_model_spec(expected)
    assert spec.name == name
    normalised = {k: tuple(v) if isinstance(v, list) else v for k, v in (kwargs or {}).items()}
    assert spec.options == normalised
    assert spec.call == expected


def test_spacing_key_order_and_lists_do_not_change_the_canonical_string():
    texts = [
        "convnet(widths=(16,32,64),stem_stride=2)",
        "convnet( stem_stride = 2, widths = [16, 32, 64] )",
        "convnet(stem_stride=2,widths=(16,32,64),)",
    ]
    assert {parse_model_spec(t).call for t in texts} == {"convnet(stem_stride=2,widths=(16,32,64))"}


def test_a_preset_written_as_a_call_builds_the_preset():
    # cnn_wide_s2's options written out by hand (kdtutor/models/small_cnn.py, _PRESETS)
    _same_architecture(
        _build("convnet(widths=(16,32,64),blocks_per_stage=1,stem_stride=2)"),
        build_model("cnn_wide_s2"),
    )
    _same_architecture(
        _build("resnet8(widths=(8,8,16,32),stem_stride=2)"), build_model("resnet8_half_s2")
    )


@pytest.mark.parametrize(
    ("widths", "params"),
    [((8, 16, 32, 64), 74_498), ((16, 32, 64, 128), 295_290), ((32, 64, 128, 256), 1_175_786)],
)
def test_the_teacher_family_round_trips_with_the_design_notes_counts(widths, params):
    kwargs = {"widths": widths, "blocks_per_stage": 2, "stem_stride": 2}
    text = format_model_spec("convnet", kwargs)
    model = _build(text)
    assert model_summary(model, latency_runs=0).params == params
    # build -> name -> build: the string read back builds the same network
    again = _build(format_model_spec(parse_model_spec(text).name, parse_model_spec(text).options))
    _same_architecture(model, again)
    _same_architecture(model, build_model("convnet", **kwargs))


def test_the_call_form_overrides_a_presets_defaults():
    model = _build("cnn_wide_s2(widths=(8,16,32))")
    assert model.widths == (8, 16, 32)
    assert model.blocks_per_stage == (1, 1, 1)  # the preset's other options stay


def test_weights_load_under_the_call_form(tmp_path):
    torch.manual_seed(0)
    source = build_model("convnet", widths=(8, 16), stem_stride=2)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = _build(f"convnet(widths=(8,16),stem_stride=2):{path}")
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_a_file_recording_its_call_form_is_checked_against_the_spec(tmp_path):
    torch.manual_seed(0)
    source = build_model("convnet", widths=(8, 16))
    path = tmp_path / "w.pt"
    recorded = "convnet(widths=(8,16))"
    torch.save({"model": recorded, "state_dict": source.state_dict()}, path)
    _build(f"convnet(widths=[8, 16]):{path}")  # the same call, written another way
    # a file recording the call spelled another way (spaces, a list) loads under the call
    torch.save({"model": "convnet( widths=[8, 16] )", "state_dict": source.state_dict()}, path)
    _build(f"convnet(widths=(8,16)):{path}")
    with pytest.raises(CheckpointError, match="holds a"):
        _build(f"convnet(widths=(8,32)):{path}")
    torch.save({"model": recorded, "state_dict": source.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"holds a 'convnet\(widths=\(8,16\)\)' model"):
        _build(f"convnet(widths=(8,32)):{path}")
    # a file recording only the name (as written before the call form) still loads
    torch.save({"model": "convnet", "state_dict": source.state_dict()}, path)
    _build(f"convnet(widths=(8,16)):{path}")


# -------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("convnet(widths=x)", "not a literal"),
        ("convnet(widths=f(1))", "not a literal"),
        ("convnet(widths=a.b)", "not a literal"),
        ("convnet(widths=(1, x))", "not a literal"),
        ("os.system('ls')", "plain name"),
        ("__import__('os').system('ls')", "unexpected"),
        ("convnet(widths=(8,16))(x=1)", "unexpected"),
        ("convnet(8)", "by position"),
        ("convnet(**{'widths': (8,)})", "unpacks"),
        ("convnet(widths=(8,),widths=(16,))", "twice"),
        ("convnet(widths=(8,16)", "unbalanced"),
        ("convnet)", "unbalanced"),
        ("convnet(widths=(8,))x.pt", "unexpected"),
        ("convnet(widths=(8,)):", "names no weights file"),
        ("convnet(widths=(8,),", "unbalanced"),
        ("convnet(widths={8: 1})", "dict"),
        ("convnet(widths={8})", "set"),
        ("convnet(dropout=1e999)", "finite"),
        ("convnet(num_classes=3)", "cannot be set"),
        ("convnet(weights_path='w.pt')", "cannot be set"),
        ("zoo:shapes_cnn_large(widths=(8,))", "zoo models take no options"),
        ("timm:resnet18(drop_rate=0.1)", "timm models take no options"),
        ("convnet(widths=(8,) if 1 else 2)", "not a literal"),
        ("convnet(=1)", "cannot read"),
    ],
)
def test_malformed_specs_are_refused_with_what_to_write(text, message):
    with pytest.raises(ModelSpecError, match=message) as caught:
        parse_model_spec(text)
    assert isinstance(caught.value, KDTutorError)


def test_a_spec_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSpecError):
        parse_model_spec("convnet(widths=open('touched','w'))")
    assert not (tmp_path / "touched").exists()
    # a call of a builtin's name is only a name: it is looked up in the model registry
    assert parse_model_spec("__import__(name='os')").name == "__import__"
    with pytest.raises(UnknownNameError, match="unknown model '__import__'"):
        _build("__import__(name='os')")


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_an_empty_or_non_string_spec_is_refused(bad):
    with pytest.raises(KDTutorError, match="must be named by a string"):
        parse_model_spec(bad)


def test_an_option_the_model_does_not_take_is_refused_with_its_options():
    with pytest.raises(ModelSpecError, match=r"does not take 'widht'.*widths, blocks_per_stage"):
        _build("convnet(widht=(8,16))")


def test_an_unknown_model_is_refused_with_the_closest_names():
    with pytest.raises(UnknownNameError, match="Did you mean 'convnet'"):
        _build("convnett(widths=(8,16))")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("convnet(widths=(8,16),blocks_per_stage=(1,2,3))", "3 counts for 2 stages"),
        ("convnet(widths=16)", "not iterable"),
        ("resnet8(depth=9)", "6n\\+2"),
        ("convnet(widths=(8,0))", "width"),
    ],
)
def test_a_value_the_builder_refuses_is_named_with_the_spec(text, message):
    with pytest.raises(ModelSpecError, match=message) as caught:
        _build(text)
    assert parse_model_spec(text).call in str(caught.value)


def test_a_hand_made_zoo_spec_with_options_is_refused_at_build():
    spec = ModelSpec("zoo", "shapes_cnn_large", None, (("widths", (8,)),))
    with pytest.raises(ModelSpecError, match="take no options"):
        _build(spec)


def test_format_refuses_what_it_cannot_write():
    with pytest.raises(ModelSpecError, match="model name"):
        format_model_spec("not a name", {"a": 1})
    with pytest.raises(ModelSpecError, match="identifiers"):
        format_model_spec("convnet", {"bad key": 1})
    with pytest.raises(ModelSpecError, match="finite"):
        format_model_spec("convnet", {"dropout": float("nan")})
    with pytest.raises(ModelSpecError, match="cannot be a model option"):
        format_model_spec("convnet", {"widths": torch.tensor([8])})


def test_the_cli_trains_saves_and_reloads_a_student_named_by_its_call(tmp_path, monkeypatch):
    import yaml

    from kdtutor.cli import main

    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    student = "convnet(widths=(8,16),stem_stride=2)"
    config = tmp_path / "exp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "shapes",
                "student": student,
                "method": "scratch",
                "seeds": [0],
                "train_size": 64,
                "test_size": 32,
                "train": {"epochs": 1, "batch_size": 32},
            }
        )
    )
    run = tmp_path / "run"
    assert main(["distill", "--config", str(config), "--run-dir", str(run), "--save-student"]) == 0
    weights = run / "student-seed0.pt"
    saved = torch.load(weights, weights_only=True)["state_dict"]
    model = _build(f"{student}:{weights}")
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    assert model.widths == (8, 16)
