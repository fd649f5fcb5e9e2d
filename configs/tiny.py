"""A few-second-on-CPU version of animer_vith with the same outputs (for tests and the demo)."""

from configs.animer_vith import get_config as _full_config


def get_config():
    config = _full_config()
    config.name = "tiny"
    model = config.model
    model.variant = "Ti/16"         # width 192, 3 heads
    model.depth = 2
    model.drop_path_rate = 0.1
    model.smal_head.update(dim=64, depth=1, heads=2, dim_head=32, mlp_dim=64)
    model.head_encoder.widths = (8, 16, 16, 32, 32)
    model.head_encoder.crop = 64
    model.fusion.hidden = 128
    model.class_head.update(hidden=64, features=32)
    return config
