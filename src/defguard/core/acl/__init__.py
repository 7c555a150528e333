"""ACL 2.0: rules, aliases and destinations, staged and applied."""
