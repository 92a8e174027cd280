"""Datasets on disk: builders (`omnilm data NAME OUT_DIR`) and JSONL record reading/validation."""
