"""GPU benchmark: the pipeline call pattern on torch CUDA tensors (ours against diffusers eager
and compiled), and one fused step on CuPy and torch CUDA against the memory floor."""
