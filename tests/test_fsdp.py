"""FSDP2 (``fully_shard``, 2 gloo processes) runs the packed engine to the same loss and gradients as one process.

The chunked head reads the head weight outside the module's forward; under FSDP2 that weight is the
all-gathered one (the root module is not resharded after its forward), which this test pins down.
"""

import shutil
import sys
from pathlib import Path

import pytest
import torch

from test_distributed import _run

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

WORKER = Path(__file__).with_name("fsdp_worker.py")


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_fsdp2_two_processes_equal_one(tmp_path, mode):
    if mode == "lora":
        pytest.importorskip("peft")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    _run([sys.executable, str(WORKER), str(tmp_path / "one.pt"), mode], tmp_path)
    _run(
        [torchrun, "--nproc_per_node", "2", "--standalone", str(WORKER), str(tmp_path / "two.pt"), mode],
        tmp_path,
    )
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    torch.testing.assert_close(two["loss"], one["loss"], atol=1e-5, rtol=1e-5)
    assert two["grads"].keys() == one["grads"].keys() and one["grads"]
    if mode == "lora":
        assert all("lora_" in name for name in one["grads"])  # only the adapters train
    for name, grad in one["grads"].items():
        torch.testing.assert_close(
            two["grads"][name], grad, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"grad {n}: {m}"
        )
