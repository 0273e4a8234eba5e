"""Latent explorer: pure render functions (:mod:`.render`) and thin ipywidgets wiring (:mod:`.widgets`).

Taught in: ``notebooks/08_latent_explorer.ipynb``; served as a web app by ``make explore`` (:mod:`.serve`).
"""
from .render import (MAX_UPLOAD_BYTES, DirectionLabel, Directions, ExploreInputError, LatentSpace, Render,
                     check_layers, edit_latents, export_latent, ganspace, image_grid, label_directions,
                     load_any_generator, mix_latents, parse_seeds, png_bytes, project_image, read_image,
                     render_edit, render_interpolation, render_mixing, render_seeds, render_walk, sefa, slerp,
                     spearman, to_uint8)

__all__ = ["MAX_UPLOAD_BYTES", "DirectionLabel", "Directions", "ExploreInputError", "LatentSpace", "Render",
           "check_layers", "edit_latents", "export_latent", "ganspace", "image_grid", "label_directions",
           "load_any_generator", "mix_latents", "parse_seeds", "png_bytes", "project_image", "read_image",
           "render_edit", "render_interpolation", "render_mixing", "render_seeds", "render_walk", "sefa", "slerp",
           "spearman", "to_uint8"]
