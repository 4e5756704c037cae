"""The synthetic-scenes benchmark: scenes with full ground truth and their captions, a tower
pretrained on their facts, the fidelity evaluator, and the offline quickstart with its report.

Users' runs (data, model, train, infer, export) never import this package; only the CLI verbs
`mllm scenes`, `mllm eval` and `mllm quickstart` do.
"""
