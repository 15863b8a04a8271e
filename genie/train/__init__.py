"""genie.train: the one training loop, the recipes that train each model and a whole world, evaluation
and its metrics."""
