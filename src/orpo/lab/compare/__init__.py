"""``orpo compare``: one recipe trained once per method (and per grid value), each in its own process."""
