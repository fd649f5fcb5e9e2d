"""A few-second-on-CPU version of animer_vith with the same outputs (for tests and the demo)."""

from animax.models.config import tiny_model_config
from configs.animer_vith import get_config as _full_config


def get_config():
    config = _full_config()
    config.name = "tiny"
    config.model = tiny_model_config()
    return config
