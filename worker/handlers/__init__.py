"""Handler adapters: how the user's function is found and called, per handler type."""
