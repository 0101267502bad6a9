"""ddim-core's ComfyUI node pack: DDIM Sampler, DDIM Inversion Sampler, DDIM Schedule and Flip to
Inversion Sigmas, plus "ddim_core" in the stock KSampler's sampler list.

ComfyUI loads packs only from `custom_nodes/` folders, so `python -m ddim_comfyui install DIR`
(also `ddim-core comfyui install DIR`) writes a small shim folder there that imports
`ddim_comfyui.nodes` (the only module that imports comfy). Everything else
(`ddim_comfyui.core`, `ddim_comfyui.install`) runs without ComfyUI.
"""
