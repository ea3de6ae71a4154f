"""Inference: load a trained model once, tag and summarise documents, serve them."""
