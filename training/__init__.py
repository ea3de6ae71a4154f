"""Training: backbone conversion, tagger and summariser training, evaluation."""
