"""apisensor's discovery: what the transactions mean (inventory, findings) and where they are stored."""
