"""Command-line tools over the object layer (`gateway migrate`, `gateway rewrap`, `gateway keys usage`)."""
