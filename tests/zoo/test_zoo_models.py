"""The zoo: deterministic loading, published costs, spec resolution and its errors."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from coinfer.errors import InputError, ModelLoadError
from coinfer.graph import capture
from coinfer.zoo import ZOO, list_models, load_model, parse_input_shape

# Published MACs are rounded and their definitions of a "MAC" differ slightly (pooling,
# element-wise ops): the brief's tolerance.
GMACS_TOLERANCE = 0.05


@pytest.mark.parametrize("name", [e.name for e in list_models() if e.published_gmacs])
def test_flops_match_published_gmacs(name: str) -> None:
    # On the meta device with fake tensors: shapes only, no weights, no arithmetic.
    entry = ZOO[name]
    model, inputs = load_model(name, meta=True)
    graph = capture(model, inputs, fake=True)
    gmacs = graph.total_flops / 2e9
    assert abs(gmacs - entry.published_gmacs) <= GMACS_TOLERANCE * entry.published_gmacs, gmacs
    assert graph.total_param_bytes == sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "params"),
    [("bert_base", 109_482_240), ("gpt2", 124_439_808), ("bert_base_plain", 109_482_240)],
)
def test_transformer_sizes(name: str, params: int) -> None:
    # Parameter counts of the reference implementations (GPT-2's head is tied: counted once).
    model, inputs = load_model(name, (1, 16), meta=True)
    assert sum(p.numel() for p in model.parameters()) == params
    graph = capture(model, inputs, fake=True)
    assert graph.total_param_bytes == 4 * params


def test_zoo_entries_are_complete() -> None:
    required = {
        "alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2", "inception", "tiny_yolov2",
        "unet", "vit_b16", "bert_base", "gpt2", "tiny_cnn", "tiny_dag", "tiny_mlp",
    }  # fmt: skip
    assert required <= set(ZOO)
    for entry in list_models():
        assert entry.description and "\n" not in entry.description
        assert all(d > 0 for d in entry.input_shape)
        assert callable(entry.resolve())


def test_same_spec_gives_identical_weights_and_inputs() -> None:
    a, xa = load_model("resnet18", (1, 3, 32, 32))
    b, xb = load_model("resnet18", (1, 3, 32, 32))
    assert all(
        torch.equal(u, v)
        for u, v in zip(a.state_dict().values(), b.state_dict().values(), strict=False)
    )
    assert torch.equal(xa[0], xb[0])
    assert not a.training and all(p.dtype == torch.float32 for p in a.parameters())


def test_loading_does_not_disturb_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("tiny_cnn")
    assert torch.equal(torch.rand(3), expected)


def test_text_models_get_token_ids() -> None:
    _, (ids,) = load_model("bert_base_plain", (1, 16))
    assert ids.dtype == torch.int64 and ids.shape == (1, 16) and int(ids.max()) < 30522


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,3,224,224", (1, 3, 224, 224)),
        ("1x3x32x32", (1, 3, 32, 32)),
        (" 2, 8 ", (2, 8)),
        ("(1,64)", (1, 64)),
    ],
)
def test_parse_input_shape(text: str, expected: tuple[int, ...]) -> None:
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["", "1,a", "1,0,3", "-1,2"])
def test_parse_input_shape_rejects(text: str) -> None:
    with pytest.raises(InputError, match="input shape"):
        parse_input_shape(text)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "mymodel.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def plain():
                return nn.Sequential(nn.Linear(4, 3), nn.ReLU())

            def with_inputs():
                return nn.Linear(4, 2), (torch.ones(1, 4),)

            def broken():
                raise RuntimeError("no GPU here")

            def wrong():
                return 42

            NOT_CALLABLE = 3
            """
        )
    )
    return path


def test_load_from_file(model_file) -> None:
    model, (x,) = load_model(f"{model_file}:with_inputs")
    assert isinstance(model, nn.Linear) and x.shape == (1, 4)
    model, (x,) = load_model(f"{model_file}:plain", (2, 4))
    assert x.shape == (2, 4) and not model.training


def test_load_from_module() -> None:
    model, _inputs = load_model("coinfer.zoo.tiny:tiny_mlp", (1, 64))
    zoo_model, _ = load_model("tiny_mlp")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), zoo_model.state_dict().values(), strict=False)
    )


@pytest.mark.parametrize(
    ("suffix", "match"),
    [
        (":missing", "has no attribute 'missing'"),
        (":broken", "raised RuntimeError: no GPU here"),
        (":wrong", "returned int"),
        (":NOT_CALLABLE", "not callable"),
        (":plain", "no example inputs"),
    ],
)
def test_load_errors_from_file(model_file, suffix: str, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        load_model(f"{model_file}{suffix}")


@pytest.mark.parametrize(
    ("spec", "shape", "match"),
    [
        ("no_such_model", None, "unknown model"),
        ("/nonexistent/model.py:f", None, "not found"),
        ("no_such_pkg_xyz.mod:f", None, "cannot import module"),
        ("resnet18", (1, 224, 224), "expected 4 dimensions"),
        ("resnet18", (1, 1, 32, 32), "expected 3 channels"),
        ("", None, "bad model spec"),
    ],
)
def test_load_errors(spec: str, shape, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        load_model(spec, shape)


# ViT-B/16 at 224x224, counted by hand: 197 tokens (196 patches + class), width 768, 12 layers,
# MLP 3072. Per layer: QKV 197*768*2304, scores Q K^T and attention x V 2*197*197*768, output
# projection 197*768*768, MLP 2*197*768*3072; plus the 16x16 patch embedding 196*768*768 and the
# 1000-way head 768*1000 = 17.564 GMACs, of which the attention products are 0.715 (4.1 %).
VIT_T, VIT_D, VIT_L, VIT_F = 197, 768, 12, 3072
VIT_ATTENTION_MACS = VIT_L * 2 * VIT_T * VIT_T * VIT_D
VIT_MACS = (
    VIT_L * (VIT_T * VIT_D * 3 * VIT_D + VIT_T * VIT_D * VIT_D + 2 * VIT_T * VIT_D * VIT_F)
    + VIT_ATTENTION_MACS
    + 196 * VIT_D * 3 * 16 * 16
    + VIT_D * 1000
)


@pytest.mark.parametrize("name", ["vit_b16", "vit_b16_plain"])
def test_vit_flops_count_attention(name: str) -> None:
    """Tight enough that losing the attention products (4.1 %) fails, unlike the 5 % check."""
    model, inputs = load_model(name, meta=True)
    graph = capture(model, inputs, fake=True)
    macs = graph.total_flops / 2
    # norms, softmax, GELU and residual adds are the only extra work: < 0.5 % on top
    assert VIT_MACS <= macs <= VIT_MACS * 1.005, macs / VIT_MACS
    attention = sum(n.flops for n in graph.nodes if n.op == "attention") / 2
    # the products themselves, plus the softmax over 12 x 12 x 197 x 197 scores (< 2 %)
    assert VIT_ATTENTION_MACS <= attention <= VIT_ATTENTION_MACS * 1.02, attention
