"""The `omnilm` command line: thin commands over the library."""
