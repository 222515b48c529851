"""The offline demo (`tiergate demo`) and the simulated providers it runs against."""
