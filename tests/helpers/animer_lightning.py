"""AniMer checkpoints made by AniMer's own writers: hydra composes the config, a LightningModule
with AniMer's state-dict layout calls `save_hyperparameters`, `Trainer.fit` runs and
`ModelCheckpoint(save_last=True)` saves, and hydra's `OmegaConf.save` writes `.hydra/config.yaml`.

The config tree mirrors AniMer's `amr/configs_hydra` (a `train.yaml` whose defaults list takes
`experiment=AniMerStage2`, which extends `experiment/default.yaml`, with AniMer's keys and
interpolations) at the values that matter here; the module is AniMer's `AMR` in layout only:
backbone, SMAL head and class-token head are `nn.Parameter`s under AniMer's names, run by the
functional references of `torch_reference.py`; the SMAL buffers, prior-loss buffers,
discriminator and `initialized` buffer are there as AMR registers them. Manual optimisation with
AdamW over backbone, head and class head, as AMR's `configure_optimizers` builds it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from helpers.torch_reference import (
    random_state,
    register_tensors,
    torch_class_head_shapes,
    torch_head,
    torch_head_shapes,
    torch_vit,
    torch_vit_shapes,
)

# MODEL.BACKBONE.TYPE -> (width, depth, heads, mlp): AniMer's vith, and a tiny one for tests.
BACKBONES = {"vith": (1280, 32, 16, 5120), "vit_tiny_test": (192, 2, 3, 768)}

_TREE = {
    "train.yaml": """
        # @package _global_
        defaults:
          - _self_
          - paths: default.yaml
          - experiment: null
        task_name: train
        tags: [dev]
        train: true
        ckpt_path: null
        seed: null
        trainer:
          max_steps: ${GENERAL.TOTAL_STEPS}
          log_every_n_steps: ${GENERAL.LOG_STEPS}
        """,
    "paths/default.yaml": """
        root_dir: ${oc.env:PROJECT_ROOT,.}
        data_dir: ${paths.root_dir}/data/
        output_dir: ${hydra:runtime.output_dir}
        """,
    "experiment/default.yaml": """
        # @package _global_
        SMAL:
          MODEL_PATH: data/smal/my_smpl_00781_4_all.pkl
          NUM_JOINTS: 34
        EXTRA:
          FOCAL_LENGTH: 1000
          PELVIS_IND: 0
        DATASETS:
          CONFIG:
            SCALE_FACTOR: 0.3
            ROT_FACTOR: 30
            DO_FLIP: False
        """,
    "experiment/AniMerStage2.yaml": """
        # @package _global_
        defaults:
          - default.yaml
        GENERAL:
          TOTAL_STEPS: 2_000_000
          LOG_STEPS: 3000
          CHECKPOINT_SAVE_TOP_K: 1
        LOSS_WEIGHTS:
          KEYPOINTS_3D: 0.05
          ADVERSARIAL: 0
          SUPCON: 0.0005
        TRAIN:
          LR: 1.25e-6
          WEIGHT_DECAY: 1e-4
          BATCH_SIZE: 16
        MODEL:
          IMAGE_SIZE: 256
          IMAGE_MEAN: [0.485, 0.456, 0.406]
          IMAGE_STD: [0.229, 0.224, 0.225]
          BACKBONE:
            TYPE: vith
            PRETRAINED_WEIGHTS: ./data/backbone.pth
          SMAL_HEAD:
            TYPE: transformer_decoder
            IN_CHANNELS: 2048
            IEF_ITERS: 1
            TRANSFORMER_DECODER:
              depth: 6
              heads: 8
              mlp_dim: 1024
              dim_head: 64
              dropout: 0.0
              norm: layer
              context_dim: ${MODEL.CONTEXT_DIM}
          CONTEXT_DIM: 1280
        """,
}

# Overrides (hydra's command-line grammar): learning rate 0 keeps the weights of the module.
FROZEN = ["TRAIN.LR=0"]
# A tiny model with AniMer's layout.
TINY = ["MODEL.BACKBONE.TYPE=vit_tiny_test", "MODEL.CONTEXT_DIM=192", "MODEL.SMAL_HEAD.TRANSFORMER_DECODER.depth=2",
        "MODEL.SMAL_HEAD.TRANSFORMER_DECODER.heads=2", "MODEL.SMAL_HEAD.TRANSFORMER_DECODER.dim_head=32",
        "MODEL.SMAL_HEAD.TRANSFORMER_DECODER.mlp_dim=64", "+MODEL.CLASS_TOKEN_HEAD.hidden_dim=64",
        "+MODEL.CLASS_TOKEN_HEAD.output_dim=32"]


def write_config_tree(folder) -> Path:
    folder = Path(folder)
    for name, text in _TREE.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def compose(config_dir, overrides=()):
    """hydra's composition of train.yaml with experiment=AniMerStage2, as AniMer's main.py gets it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.2"):
        return hydra_compose("train.yaml", overrides=["experiment=AniMerStage2", *overrides])


def discriminator_shapes():
    """AniMer's Discriminator (HMR's): per-joint 1x1 convs and linears over 34 joints, betas, bones."""
    shapes = {"D_conv1.weight": (32, 9, 1, 1), "D_conv1.bias": (32,), "D_conv2.weight": (32, 32, 1, 1),
              "D_conv2.bias": (32,)}
    shapes.update({f"pose_out.{j}.{p}": s for j in range(34) for p, s in (("weight", (1, 32)), ("bias", (1,)))})
    for prefix, dims in (("betas", (41, 10, 5, 1)), ("bone", (24, 10, 5, 1)),
                         ("D_alljoints", (32 * 34, 1024, 1024, 1))):
        names = ("fc1", "fc2", "out")
        for name, (a, b) in zip(names, zip(dims[:-1], dims[1:])):
            shapes.update({f"{prefix}_{name}.weight": (b, a), f"{prefix}_{name}.bias": (b,)})
    return shapes


class AniMerLayout(pl.LightningModule):
    """AniMer's AMR state-dict layout and optimiser set-up, sized by the config's MODEL section."""

    def __init__(self, cfg, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["seed"])  # as AMR: hparams {'cfg': DictConfig}
        self.cfg = cfg
        width, depth, self.backbone_heads, mlp = BACKBONES[cfg.MODEL.BACKBONE.TYPE]
        decoder = cfg.MODEL.SMAL_HEAD.TRANSFORMER_DECODER
        class_head = cfg.MODEL.get("CLASS_TOKEN_HEAD", {})
        self.depth, self.head_depth, self.head_heads = depth, decoder.depth, decoder.heads
        state = {f"backbone.{k}": v for k, v in random_state(torch_vit_shapes(width, depth, mlp, 192), seed).items()}
        head = torch_head_shapes(dim=1024 if width == 1280 else 64, depth=decoder.depth, heads=decoder.heads,
                                 dim_head=decoder.dim_head, mlp_dim=decoder.mlp_dim, context_dim=decoder.context_dim)
        state.update({f"smal_head.{k}": v for k, v in random_state(head, seed + 1, scale=0.02).items()})
        shapes = torch_class_head_shapes(width, class_head.get("hidden_dim", 4096), class_head.get("output_dim", 256))
        state.update({f"class_token_head.head.{k}": v for k, v in random_state(shapes, seed + 2).items()})
        state.update({f"discriminator.{k}": v for k, v in random_state(discriminator_shapes(), seed + 3).items()})
        register_tensors(self, state, parameters=True)
        buffers = {"smal_head.init_pose": torch.zeros(1, 210), "smal_head.init_betas": torch.zeros(1, 41),
                   "smal_head.init_cam": torch.tensor([[0.9, 0.0, 0.0]]),
                   "smal.shapedirs": torch.zeros(3889, 3, 41), "smal.v_template": torch.zeros(3889, 3),
                   "smal.posedirs": torch.zeros(306, 3889 * 3), "smal.J_regressor": torch.zeros(35, 3889),
                   "smal.lbs_weights": torch.zeros(3889, 35), "smal.faces": torch.zeros(7774, 3, dtype=torch.int32),
                   "smal.parents": torch.zeros(35, dtype=torch.int32),
                   "shape_prior_loss.betas_prec": torch.zeros(5, 41, 41),
                   "shape_prior_loss.mean_betas": torch.zeros(5, 41),
                   "pose_prior_loss.mean_pose": torch.zeros(105), "pose_prior_loss.precs": torch.zeros(105, 105),
                   "pose_prior_loss.use_index": torch.zeros(105), "initialized": torch.tensor(False)}
        register_tensors(self, buffers, parameters=False)
        self.automatic_optimization = False  # AMR steps its optimisers itself

    def state(self):
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def forward(self, images):
        sd = self.state()
        fmap, cls = torch_vit(sd, images[:, :, :, 32:-32], self.backbone_heads, self.depth, prefix="backbone.")
        out = torch_head(sd, fmap, self.head_depth, self.head_heads, prefix="smal_head.")
        h = cls
        for i in (0, 3, 6):
            h = F.linear(h, sd[f"class_token_head.head.{i}.weight"])
            h = F.batch_norm(h, sd[f"class_token_head.head.{i + 1}.running_mean"],
                             sd[f"class_token_head.head.{i + 1}.running_var"],
                             sd.get(f"class_token_head.head.{i + 1}.weight"),
                             sd.get(f"class_token_head.head.{i + 1}.bias"))
            h = F.relu(h) if i < 6 else h
        return {**out, "feature_map": fmap, "cls_token": cls, "class_features": h}

    def training_step(self, batch, batch_idx):
        out = self(batch[0])
        loss = sum(out[k].square().mean() for k in ("pose", "betas", "cam", "class_features"))
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def configure_optimizers(self):
        params = [p for name, p in self.named_parameters()
                  if name.split(".")[0] in ("smal_head", "backbone", "class_token_head")]
        return torch.optim.AdamW([{"params": params, "lr": self.cfg.TRAIN.LR}],
                                 weight_decay=self.cfg.TRAIN.WEIGHT_DECAY),


def train_and_save(cfg, run_dir, callbacks=()) -> tuple[AniMerLayout, Path]:
    """One `Trainer.fit` step at learning rate 0 (so the weights stay those of the module), saved by
    `ModelCheckpoint(save_last=True)` into RUN/checkpoints, and RUN/.hydra/config.yaml written as
    hydra writes it. Returns the module and RUN/checkpoints/last.ckpt."""
    run_dir = Path(run_dir)
    assert cfg.TRAIN.LR == 0, "compose with the override TRAIN.LR=0"
    model = AniMerLayout(cfg)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=1)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True,
                                              save_top_k=cfg.GENERAL.CHECKPOINT_SAVE_TOP_K)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoint, *callbacks], default_root_dir=run_dir)
    trainer.fit(model, train_dataloaders=loader)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what hydra's run_job writes
    return model, run_dir / "checkpoints" / "last.ckpt"
