"""One module per user command (train, evaluate, predict, ensemble, explain, export, lr_find,
sweep, search, data), each a thin layer over data/, models/, engine/, runs/ and analysis/;
the CLI and the Python API call these same functions."""
