"""fewshot-gen: the small library behind the few-shot image generation notebooks.

Modules (one concept each): ``config`` (profiles, device, seeds), ``data`` (emoji dataset, few-shot sampling,
image folders), ``models`` (StyleGAN2, LoFGAN), ``methods`` (CDC, MixDL, LoFGAN, baselines), ``train``,
``metrics``, ``viz``, ``results`` (metrics.json and the claims ledger), ``runner`` (papermill batch runs).
Nothing heavy is imported here: ``import fewshot_lib`` is instant.
"""

__version__ = "0.1.0"
