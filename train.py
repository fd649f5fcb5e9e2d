"""Train, evaluate or export an animax model (`animax-train`).

    python train.py --config configs/standin.py:tiny --workdir runs/tiny

The command lives in animax/cli/train.py (`--help` for everything)."""

from animax.cli.train import run

if __name__ == "__main__":
    run()
