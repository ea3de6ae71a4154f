"""policylens: tag, summarise and serve Chinese industrial-policy documents offline."""

__version__ = "0.1.0"
