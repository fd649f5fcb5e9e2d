"""animax: AniMer-style 3D animal pose and shape estimation in JAX/Flax."""

from animax.smal import SMALModel, load_smal, save_smal, smal_forward

__all__ = ["SMALModel", "load_smal", "save_smal", "smal_forward"]
