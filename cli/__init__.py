"""The ``perimeter`` command line (``cli.main``): every command's arguments and dispatch."""
