"""One module per ``vptbench`` command: ``add_parser`` adds its options, ``main`` runs it and returns
the exit code. Their top-level imports are light (the library is imported inside the functions), so
``vptbench --help`` answers at once; :mod:`.options` holds the option types and groups several
commands share, :mod:`.common` what they do alike (the unstable-timings line, the report).
"""
