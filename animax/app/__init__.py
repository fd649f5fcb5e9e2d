"""The web app (`animax-app`, `python -m animax.app`): photos and clips in a browser page,
over the same model, predictor and exports as infer.py. Needs the `app` extra (Gradio).

cli.py: the command line (model, compilation cache, limits, server); ui.py: the page;
engine.py: the work behind it, without Gradio; uploads.py: checks of every upload;
boxes.py: boxes clicked or typed as text lines.
"""
