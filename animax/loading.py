"""Where a model comes from: a checkpoint directory, the shipped demo model, or a config with
random weights; `LoadedModel` holds it with its body model and provenance.

Every problem a user can cause (missing or unreadable checkpoint, SMAL or config file)
surfaces as `ModelLoadError`, whose message is one line naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import sys
from pathlib import Path

import ml_collections

from animax.models import build_model, init_variables
from animax.models.config import tiny_model_config
from animax.smal.bank import STANDIN, load_body_file

RANDOM_SEED = 0


class ModelLoadError(ValueError):
    """The model cannot be built; the message names the file and the problem."""


DEMO_CONFIG_NAME = "tiny (built in)"
# The default without --ckpt: a small model trained on synthetic renders of the stand-in
# (configs/standin.py), shipped inside the package.
SHIPPED_MODEL = Path(__file__).resolve().parent / "assets" / "standin_demo"
SHIPPED_MODEL_NAME = ("the shipped demo model (configs/standin.py: ViT-Ti/16 x 4 trained from scratch on "
                      "synthetic renders of the stand-in quadruped only; use --ckpt for real animals)")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A network with its weights and body model (`variables["smal"]["model"]`), and `info`:
    JSON-ready provenance for result.json (weights, config, dtype, body model)."""
    model: object
    variables: dict
    info: dict

    @property
    def body(self):
        """The SMAL body model the network's meshes are made with."""
        return self.variables["smal"]["model"]

    def with_body_model(self, body, smal_file) -> LoadedModel:
        """The same network and weights over another body model of the same joint layout (its own
        mesh)."""
        variables = {**self.variables, "smal": {"model": body}}
        return LoadedModel(self.model.clone(body_model=body), variables,
                           {**self.info, "body_model": body_model_info(variables, smal_file)})


def demo_config():
    """The config of the random-weights demo, built into the package (no config file needed)."""
    return ml_collections.ConfigDict({"name": "tiny", "model": tiny_model_config(), "smal": None})


def load_config(path):
    """`get_config()` of a Python config file such as configs/tiny.py; `FILE:VARIANT` calls
    `get_config(VARIANT)`, as `train.py --config` does (e.g. configs/horse10_finetune.py:tiny).
    None: the built-in demo config."""
    if path is None:
        return demo_config()
    path, _, variant = str(path).partition(":")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: config file not found")
    if (path.parent / "__init__.py").is_file():
        # configs/*.py import their siblings as `configs.<name>`: the package's parent must be importable.
        root = str(path.parent.parent.resolve())
        if root not in sys.path:
            sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_animax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_config(*([variant] if variant else []))
    except Exception as e:                    # a user's file: any error is theirs to fix
        raise ModelLoadError(f"{path}: cannot load config ({type(e).__name__}: {e})") from None


def check_files(ckpt=None, smal=None, config=None) -> None:
    """Fails fast, before any slow work, when a named file or folder does not exist."""
    if ckpt is not None and not Path(ckpt).is_dir():
        raise ModelLoadError(f"{ckpt}: checkpoint folder not found")
    if smal is not None and smal != STANDIN and not Path(smal).is_file():
        raise ModelLoadError(f"{smal}: SMAL file not found")
    if ckpt is None and config is not None and not Path(str(config).partition(":")[0]).is_file():
        raise ModelLoadError(f"{config}: config file not found")


def uses_random_weights(ckpt=None, config=None, random_weights=False) -> bool:
    """Whether load_model_or_random builds random weights: asked for, a config file without a
    checkpoint, or no checkpoint at all and no shipped model."""
    return ckpt is None and (random_weights or config is not None or not SHIPPED_MODEL.is_dir())


def load_model_or_random(ckpt=None, smal=None, config=None, dtype=None, random_weights=False) -> LoadedModel:
    """The model of a checkpoint folder, the shipped demo model, or random weights.

    ckpt: a checkpoint folder; None: the shipped model (SHIPPED_MODEL), unless random weights
    are asked for (random_weights, or a config file);
    smal: a SMAL .pkl/.npz file or None (the checkpoint's body model, else the stand-in);
    config: the config file of random weights (None: the built-in tiny model);
    dtype: compute dtype override.
    """
    check_files(ckpt, smal, config)
    if ckpt is not None:
        model, variables, config_name, provenance = _checkpoint_model(ckpt, smal, dtype)
        weights = {"checkpoint": str(ckpt), "weights": "checkpoint", "config": config_name, **provenance}
    elif not uses_random_weights(ckpt, config, random_weights):
        model, variables, config_name, provenance = _checkpoint_model(SHIPPED_MODEL, smal, dtype)
        weights = {"checkpoint": None, "weights": SHIPPED_MODEL_NAME, "config": config_name, **provenance}
    else:
        model, variables = random_model(config, smal, dtype)
        weights = {"checkpoint": None, "weights": f"random (seed {RANDOM_SEED})",
                   "config": DEMO_CONFIG_NAME if config is None else str(config)}
    return LoadedModel(model, variables, {**weights, "dtype": model.model_config.dtype,
                                          "body_model": body_model_info(variables, smal)})


def _checkpoint_model(ckpt, smal, dtype):
    from animax.saved_model import load_model, read_config  # orbax is only needed on this path
    try:
        config, provenance = read_config(ckpt)
        model, variables = load_model(ckpt, smal=smal, dtype=dtype)
    except Exception as e:                    # a user's files: report them in one line
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(f"{ckpt}: cannot load checkpoint ({type(e).__name__}: {first_line})") from None
    return model, variables, config.get("name"), {"checkpoint_info": provenance}


def random_model(config_path, smal=None, dtype=None):
    """(model, variables) with randomly initialised weights (seed RANDOM_SEED) for a config file."""
    return _random_model(None if config_path is None else str(config_path), None if smal is None else str(smal), dtype)


# Cached: initialising compiles the whole model, and notebook
# or test callers run the CLI repeatedly in one process with the same arguments.
@functools.lru_cache(maxsize=2)
def _random_model(config_path, smal, dtype):
    config = load_config(config_path)
    if dtype is not None:
        config.model.dtype = dtype
    try:
        model = build_model(config, smal=smal)
    except (OSError, ValueError) as e:        # load_smal's messages name the file
        raise ModelLoadError(str(e)) from None
    return model, init_variables(model, RANDOM_SEED)


def load_body_models(files: dict) -> dict:
    """{name: SMALModel} for `--smal NAME=FILE` values ({name: file}; the file `standin` is the
    built-in stand-in). Raises ModelLoadError naming the file that fails."""
    bodies = {}
    for name, file in files.items():
        try:
            bodies[name] = load_body_file(file)
        except (OSError, ValueError) as e:    # load_smal's messages name the file
            raise ModelLoadError(f"--smal {name}={file}: {e}") from None
    return bodies


def body_model_info(variables, smal_file) -> dict:
    """JSON-ready description of the body model inside `variables`."""
    body = variables["smal"]["model"]
    return {"name": body.name, "file": None if smal_file is None else str(smal_file),
            "vertices": body.num_vertices, "faces": int(body.faces.shape[0]), "joints": body.num_joints,
            "keypoints": body.num_keypoints, "betas": body.num_betas}
