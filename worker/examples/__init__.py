"""Example handlers: one of each type, used by ``worker demo`` and the docs."""
