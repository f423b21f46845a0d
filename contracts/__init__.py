"""Wire vocabulary shared by the worker, the trading bot and subscribers. Never imports worker."""
