"""AniMer's stage 1 (amr/configs_hydra/experiment/AniMerStage1.yaml): Animal3D alone, from the
ViTPose backbone, with the adversarial SMAL prior.

    python train.py --config configs/animer_stage1.py --workdir runs/stage1 \\
        --config.init.path=checkpoints/vitpose_h --config.data.root=data/

Then stage 2 is configs/animal3d.py with `--config.init.path=runs/stage1/export`. Only the
changes from configs/animal3d.py (AniMer's stage 2) are listed.
"""

from configs import animal3d


def get_config():
    config = animal3d.get_config()
    config.name = "animer_stage1"
    config.init.kind = "backbone"                 # the converted ViTPose backbone.pth; heads start fresh
    config.model.smal_head.ief_iters = 3          # stage 1 iterates the SMAL head 3 times (stage 2: 1)
    config.loss.weights.adversarial = 0.0005      # the discriminator prior, with its own AdamW
    config.num_train_steps = 191_000              # AniMer's TOTAL_STEPS
    config.eval_every_steps = 191                 # its VAL_STEPS (one Animal3D epoch at batch 16)
    config.log_every_steps = 191
    return config
