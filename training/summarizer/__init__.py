"""Training the extractive summariser: news data, oracle labels, the scorer loop."""
