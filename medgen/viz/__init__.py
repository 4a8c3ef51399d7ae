"""PNG figures for runs and reports: slice grids, anomaly overlays, curves, latent scatters.
Headless (Agg canvas, no pyplot state); every file is written atomically."""

from medgen.viz.overlay import save_overlay
from medgen.viz.plots import save_curves, save_latent_map, save_scatter
from medgen.viz.slices import save_slice_grid

__all__ = ["save_curves", "save_latent_map", "save_overlay", "save_scatter", "save_slice_grid"]
