"""Models: load one by name (`load.py`: Hub id, folder, quantisation, adapters) and build tiny ones
from a config with a locally trained tokenizer (`tiny.py`: tests, the demo, the bench)."""
