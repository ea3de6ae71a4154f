"""The extractive summariser's shared pieces: sentence units, features, the model directory."""
