"""Converting AniMer's release checkpoint at full size: time, peak memory and exactness, beside
PyTorch loading the same file as AniMer's `load_amr` does (`torch.load`, all of it).

The checkpoint is made by AniMer's writers (hydra composes `experiment=AniMerStage2`, one
Lightning `Trainer.fit` step of the ViT-H model at learning rate 0 with AdamW, ModelCheckpoint
saves, `.hydra/config.yaml` beside), so it holds the optimizer state too (about 3x the weights).
It is written once into --workdir and reused. Each measured command runs in its own process
under `/usr/bin/time -v` (peak RSS of that process alone).

    .venv/bin/python bench/bench_convert.py                  # ~10 min on 2 cores, ~8 GB of disk
    .venv/bin/python bench/bench_convert.py --workdir /data/tmp
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from common import report  # noqa: E402

# Converted model: the loaded animax checkpoint's arrays against torch from the checkpoint.
_EXACTNESS = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, torch
sys.path[:0] = [{root!r}, {tests!r}]
from animax import load_model
from helpers.torch_reference import torch_head, torch_vit
model, variables = load_model({out!r})
images = np.random.default_rng(0).normal(size=(1, 256, 256, 3)).astype(np.float32)
out = jax.jit(model.apply)(variables, jnp.asarray(images))
out = {{k: np.asarray(out[k], np.float64) for k in ("feature_map", "cls_token", "betas", "pose", "cam")}}
del variables
sd = torch.load({ckpt!r}, map_location="cpu", mmap=True, weights_only=False)["state_dict"]
with torch.no_grad():
    fmap, cls = torch_vit(sd, torch.from_numpy(images).permute(0, 3, 1, 2)[:, :, :, 32:-32], 16, 32, prefix="backbone.")
    ref = {{"feature_map": fmap.permute(0, 2, 3, 1), "cls_token": cls,
           **torch_head(sd, fmap, 6, 8, prefix="smal_head.")}}
err = {{k: float(np.abs(out[k] - ref[k].double().numpy()).max() / np.abs(ref[k].double().numpy()).max()) for k in out}}
print("EXACTNESS " + json.dumps(err))
"""

_TORCH_LOAD = "import torch; torch.load({ckpt!r}, map_location='cpu', weights_only=False)"


def make_release(workdir: Path) -> Path:
    """workdir/AniMer/{checkpoints/checkpoint.ckpt, .hydra/config.yaml}, written once."""
    release = workdir / "AniMer"
    if (release / "checkpoints" / "checkpoint.ckpt").is_file():
        return release
    from helpers import animer_lightning as al
    start = time.perf_counter()
    cfg = al.compose(al.write_config_tree(workdir / "configs"), al.FROZEN)
    _, last = al.train_and_save(cfg, workdir / "run")
    (release / "checkpoints").mkdir(parents=True, exist_ok=True)
    last.replace(release / "checkpoints" / "checkpoint.ckpt")  # AniMer's release name
    (workdir / "run" / ".hydra").replace(release / ".hydra")
    for other in (workdir / "run" / "checkpoints").glob("*.ckpt"):
        other.unlink()  # the top-k copy: same bytes again
    print(f"wrote {release} in {time.perf_counter() - start:.0f} s")
    return release


def measured(cmd) -> dict:
    """Wall time, peak RSS and output of one command in its own process."""
    run = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", run.stderr).group(1)
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    return {"wall_s": seconds, "peak_rss_gib": rss_kib / 2**20, "stdout": run.stdout}


def converted_bytes(out_dir: Path) -> int:
    import jax

    from animax import load_model
    _, variables = load_model(out_dir)
    return sum(leaf.nbytes for leaf in jax.tree.leaves(variables))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/animax_bench_convert"))
    parser.add_argument("--write-release", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_release:
        make_release(args.workdir)
        return
    # Training the release takes ~20 GB; in a child process, so that this one stays small.
    subprocess.run([sys.executable, __file__, "--write-release", "--workdir", str(args.workdir)], check=True)
    release = args.workdir / "AniMer"
    ckpt = release / "checkpoints" / "checkpoint.ckpt"
    python = sys.executable
    rows = []
    for src, label in ((release, "animax convert_weights.py, release folder"),
                       (ckpt, "animax convert_weights.py, .ckpt")):
        out = args.workdir / f"out_{'folder' if src == release else 'file'}"
        result = measured([python, "convert_weights.py", str(src), str(out)])
        check = subprocess.run([python, "-c", _EXACTNESS.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                                                 out=str(out), ckpt=str(ckpt))],
                               capture_output=True, text=True, cwd=ROOT)
        if check.returncode != 0:
            raise RuntimeError(check.stderr[-4000:])
        errors = json.loads(check.stdout.split("EXACTNESS ", 1)[1])
        rows.append({"path": label, "wall_s": result["wall_s"], "peak_rss_gib": result["peak_rss_gib"],
                     "max_rel_err": max(errors.values()), "errors": errors, "out": str(out)})
    kept = converted_bytes(Path(rows[0]["out"]))
    torch_load = measured([python, "-c", _TORCH_LOAD.format(ckpt=str(ckpt))])
    rows.append({"path": "PyTorch torch.load of the .ckpt (AniMer's load_amr)", "wall_s": torch_load["wall_s"],
                 "peak_rss_gib": torch_load["peak_rss_gib"]})
    for row in rows:
        row["rss_over_kept"] = row["peak_rss_gib"] * 2**30 / kept
    file_gb = ckpt.stat().st_size / 1e9
    print(f"checkpoint {ckpt}: {file_gb:.2f} GB; converted parameters {kept / 1e9:.2f} GB "
          f"(target: peak RSS under 1.5x that)")
    report("convert", rows, ["path", "wall_s", "peak_rss_gib", "rss_over_kept", "max_rel_err"],
           extra={"checkpoint_gb": file_gb, "converted_gb": kept / 1e9})


if __name__ == "__main__":
    main()
