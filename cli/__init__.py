"""The ``fastnn`` command-line tool: a thin click layer over the library."""
