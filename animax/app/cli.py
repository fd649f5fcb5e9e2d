"""animax-app: the web app on this machine's loopback address (other hosts with --host).

    animax-app                                      # the shipped demo model, http://127.0.0.1:7860
    animax-app --ckpt checkpoints/animer --smal my_smpl_00781_4_all.pkl --port 8080
    animax-app --host 0.0.0.0                       # reachable from other machines: mind who can

One model per process, compiled once per batch shape it uses (batch 1 before serving, the
batch of several animals on first use), with JAX's persistent compilation cache under the
user's cache folder so a restart loads the compiled code instead of compiling again. Runs
queue one at a time. Files are written only in the app's own folder (a new temporary folder,
removed at exit, unless --work-dir) and only files from it are served. On Hugging Face Spaces
(or anywhere that sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) those set host and port.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def parse_args(argv=None):
    from animax.app.uploads import Limits

    limits = Limits()
    parser = argparse.ArgumentParser(prog="animax-app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="checkpoint folder from convert_weights.py or training (default: the "
                                       "shipped demo model, trained on synthetic renders of the stand-in only)")
    parser.add_argument("--smal", help="SMAL body model .pkl or .npz (default: the checkpoint's, else the "
                                       "license-free stand-in quadruped)")
    parser.add_argument("--random-weights", action="store_true", help="without --ckpt: random weights")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: the config's)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST),
                        help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT)),
                        help="port (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="animals per model call when a run has several (default: %(default)s)")
    parser.add_argument("--cache-dir",
                        help="JAX's persistent compilation cache (default: $ANIMAX_COMPILE_CACHE, else "
                             "~/.cache/animax/jax, as infer.py); 'none': no cache")
    parser.add_argument("--work-dir", help="the app's folder for uploads and results (default: a new temporary "
                                           "folder, removed at exit)")
    parser.add_argument("--max-file-mb", type=int, default=limits.max_file_mb,
                        help="largest upload, MB (default: %(default)s)")
    parser.add_argument("--max-photos", type=int, default=limits.max_photos,
                        help="photos per run (default: %(default)s)")
    parser.add_argument("--max-megapixels", type=float, default=limits.max_megapixels,
                        help="largest photo or frame (default: %(default)s)")
    parser.add_argument("--max-frames", type=int, default=limits.max_frames,
                        help="longest clip, frames (default: %(default)s)")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.max_file_mb, args.max_photos, args.max_frames) < 1 or args.max_megapixels <= 0:
        parser.error("--batch-size and the --max-* limits must be positive")
    return args


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    own_folder = args.work_dir is None
    folder = Path(tempfile.mkdtemp(prefix="animax-app-") if own_folder else args.work_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Before Gradio loads: its uploads and the copies of results it serves live in our folder, and
    # it sends no usage statistics.
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    signal.signal(signal.SIGTERM, _interrupt)      # a stopped server still removes its folder
    try:
        return _serve(args, folder, started)
    finally:
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _serve(args, folder: Path, started: float) -> int:
    from animax.app.engine import Engine
    from animax.app.uploads import Limits
    from animax.loading import SHIPPED_MODEL_NAME, ModelLoadError, load_model_or_random, uses_random_weights
    from animax.runtime import enable_compile_cache

    cache_folder = enable_compile_cache(args.cache_dir)
    try:
        loaded = load_model_or_random(args.ckpt, args.smal, None, args.dtype, args.random_weights)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if uses_random_weights(args.ckpt, None, args.random_weights):
        print("WARNING: RANDOM weights: the outputs show the pipeline runs, not real predictions", file=sys.stderr)
    elif args.ckpt is None:
        print(f"note: no --ckpt given: {SHIPPED_MODEL_NAME}", file=sys.stderr)
    if args.smal is None and loaded.info["body_model"]["name"] == "standin":
        print("note: no --smal given, using the license-free stand-in quadruped", file=sys.stderr)
    engine = Engine(loaded, args.batch_size)
    seconds = engine.warm_up()
    cache = "no compilation cache" if cache_folder is None else f"compilation cache {cache_folder}"
    print(f"model ready for batches of 1 in {seconds:.1f} s ({cache})", file=sys.stderr)

    from animax.app.ui import build

    limits = Limits(args.max_file_mb, args.max_photos, args.max_megapixels, args.max_frames)
    demo = build(engine, limits, folder)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{args.max_file_mb}mb",
                allowed_paths=[], ssr_mode=False, show_error=False, quiet=True, footer_links=[],
                mcp_server=False, pwa=False, theme=theme(), prevent_thread_lock=True)
    print(f"animax-app: ready in {time.perf_counter() - started:.1f} s at http://{args.host}:{args.port} "
          f"(files in {folder})", file=sys.stderr, flush=True)
    demo.block_thread()
    return 0


def theme():
    """Gradio's default look with the system's fonts: a page that fetches no web fonts."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


if __name__ == "__main__":
    sys.exit(main())
