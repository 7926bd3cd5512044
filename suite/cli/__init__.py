"""The ``suite`` command (``main``): train, maps, runs, config, and the command groups other
packages attach through entry points. ``console`` holds what every command shares (exit codes,
consoles, the override argument)."""
