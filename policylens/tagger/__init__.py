"""The paragraph tagger's model directory (model_dir.py) and its scoring path (scoring.py)."""
