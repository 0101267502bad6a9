"""The ```python examples of docs/mindspore.md run as written (each block on its own)."""

from __future__ import annotations

import re
from pathlib import Path

import mindspore
import numpy as np
import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "mindspore.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"{PAGE.name}[{index}]", "exec"), {"__name__": "__docs__"})


def test_the_bfloat16_operators_the_page_names_as_without_a_kernel_have_none() -> None:
    """The page said two bfloat16 tensors' `a - b` has no CPU kernel, where MindSpore's
    + - * / between bfloat16 tensors run: each operator the page names as without a kernel
    fails on the CPU, and + - * / between tensors, which it says have kernels, run."""
    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    sentence = re.search(r"[^.]*have no CPU kernel[^.]*", text)
    assert sentence is not None
    named = re.findall(r"`([^`]+)`", sentence.group(0).split("have no CPU kernel")[0])
    assert named
    a = mindspore.tensor(np.array([1.0, -2.0], dtype=np.float32)).astype(mindspore.bfloat16)
    tensors = {"a": a, "b": a * 0.5}
    for expression in ["a + b", "a - b", "a * b", "a / b"]:
        assert expression not in named
        eval(expression, {}, tensors).astype(mindspore.float32).asnumpy()  # a kernel exists
    for expression in named:
        with pytest.raises(TypeError, match="Unsupported data type"):
            eval(expression, {}, tensors).asnumpy()
