"""AniMer's released model: ViT-H/16 backbone, SMAL transformer-decoder head, and the seed's
head branch and fusion. `animax.build_model(get_config())` builds it. Every model knob is
documented in animax/models/config.py."""

import ml_collections
from ml_collections.config_dict import placeholder

from animax.models.config import model_config


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "animer_vith"
    config.model = model_config()
    config.smal = placeholder(str)  # SMAL .pkl/.npz path; unset = the built-in stand-in quadruped;
                                    # comma-separated paths ('standin' = the built-in): several meshes
                                    # in one batch (animax/smal/bank.py)
    return config
