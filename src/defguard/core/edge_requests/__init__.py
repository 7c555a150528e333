"""Client requests the Edges hand to Core: dispatch to a feature's handler, once."""
