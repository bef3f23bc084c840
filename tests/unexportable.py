"""A layer that runs in torch but cannot be exported to ONNX: for tests/test_compile.py.

It lives in an importable module so that a learner holding it unpickles in any process.
"""

from __future__ import annotations

import torch


class SingularValues(torch.nn.Module):
    """Adds nothing to its (batch, n) input, by way of singular values, which ONNX has no
    operator for: eager torch runs it, the ONNX exporter cannot convert it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = torch.linalg.svdvals(x[:, :1].reshape(-1, 1, 1))
        return x + 0 * values
