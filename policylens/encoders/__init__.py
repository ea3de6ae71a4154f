"""The encoder: backbone loading and pooling, token windows, e5 sentence embeddings."""
