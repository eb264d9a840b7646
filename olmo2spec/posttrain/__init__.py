"""Post-training (Tulu 3 recipe, OLMo 2 section 5): what the sft, dpo and rlvr stages need.

- `verifiers`: the rewards RLVR trains with (GSM8K, MATH, IFEval-style constraints).

This package imports nothing heavy on import: the compiler reads the verifier names from
`verifiers` when it checks a recipe, and must not import torch (tests/test_no_torch.py).
"""
