"""The `tether` command line: it reads and administers the same database as your app."""
