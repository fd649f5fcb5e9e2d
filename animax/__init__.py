"""animax: AniMer-style 3D animal pose and shape estimation in JAX/Flax."""

from animax.models import build_model, init_variables
from animax.saved_model import load_model, save_model
from animax.smal import SMALModel, load_smal, save_smal, smal_forward

__all__ = ["SMALModel", "build_model", "init_variables", "load_model", "load_smal", "save_model",
           "save_smal", "smal_forward"]
