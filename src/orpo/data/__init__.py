"""Data: load any source, detect the layout, render with the chat template, tokenise, inspect."""
