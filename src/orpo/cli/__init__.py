"""The `orpo` command line: one subcommand per module, dispatched by ``orpo.cli.main``."""
