"""Video generation: the demo's tiny VAE + UNet3D generator trained on CPU (:mod:`fmrivid.generate.demo`), the
diffusers pipelines conditioned on decoded features (:mod:`fmrivid.generate.pipelines`), fine-tuning
(:mod:`fmrivid.generate.finetune`) and the stages of rules/generate.smk (:mod:`fmrivid.generate.stages`).

Import from the module you need: this package file imports nothing, so that planning the DAG (which reads
:mod:`fmrivid.generate.stages`) does not load torch or diffusers.
"""
