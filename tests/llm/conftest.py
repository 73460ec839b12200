"""Session-scoped small LMs for tests/llm (the code under test never modifies them: a test
checks that)."""

from __future__ import annotations

import pytest
from torch import nn

pytest.importorskip("transformers")

from llm_models import tiny_gpt2, tiny_llama, tiny_plain_gpt2, tiny_qwen2


@pytest.fixture(scope="session")
def llama() -> nn.Module:
    return tiny_llama()


@pytest.fixture(scope="session")
def qwen2() -> nn.Module:
    return tiny_qwen2()


@pytest.fixture(scope="session")
def gpt2() -> nn.Module:
    return tiny_gpt2()


@pytest.fixture(scope="session")
def plain_gpt2() -> nn.Module:
    return tiny_plain_gpt2()


@pytest.fixture(scope="session")
def models(llama, qwen2, gpt2) -> dict[str, nn.Module]:
    return {"llama": llama, "qwen2": qwen2, "gpt2": gpt2}


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """These models are tiny: one intra-op thread is faster than two fighting over shared
    cores (restored afterwards so the rest of a suite run keeps its setting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
