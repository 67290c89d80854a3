"""The shipped Accelerate configs (examples/accelerate) load in Accelerate and say what their names say."""

from pathlib import Path

import pytest

CONFIGS = Path(__file__).parents[1] / "examples" / "accelerate"
WANT = {
    "ddp.yaml": ("MULTI_GPU", None, None),
    "fsdp2.yaml": ("FSDP", "2", None),
    "fsdp2_lora.yaml": ("FSDP", "2", None),
    "zero2.yaml": ("DEEPSPEED", None, 2),
    "zero3.yaml": ("DEEPSPEED", None, 3),
}


@pytest.mark.parametrize("name", sorted(WANT))
def test_config_loads(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    kind, fsdp_version, zero_stage = WANT[name]
    assert config.distributed_type.name == kind
    if fsdp_version is not None:
        assert str(config.fsdp_config["fsdp_version"]) == fsdp_version
        assert config.fsdp_config["fsdp_reshard_after_forward"] is True  # full shard
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
    assert "accelerate launch --config_file examples/accelerate/" + name in (CONFIGS / name).read_text()
