"""The ``odet`` command line: one thin module per subcommand over the core package."""
