"""Image code below both the training data and inference: reading files (`io`), AniMer's crop
(`crop`), and the NumPy rasteriser that draws meshes (`raster`)."""
