"""CDP Spark jobs: config, engine sessions, table contracts + Delta I/O, and one module per stage."""
